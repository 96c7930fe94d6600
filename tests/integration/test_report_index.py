import html
import subprocess

import pandas as pd
from spot_utils.base.io import write_json, write_text
from spot_utils.analysis.rows import format_ci, row
from spot_utils.analysis.rows import format_rise
from spot_utils.report.cross_model import runs_with_mask
from spot_utils.report.headline import run_headline
from spot_utils.report.index_page import collect, format_seconds, index_html, write_index


def fake_rows():
    rows = [row(model="m", mask_kind="baseline", metric="loss", subset=s, value=v) for s, v in (("go", 2.0), ("english", 4.0))]
    for k, rise in ((0.1, 0.05), (1.0, 0.5)):
        rows += [row(model="m", k_percent=k, granularity="global", mask_kind="spot", metric="code_rise", subset="code", value=rise),
                 row(model="m", k_percent=k, granularity="global", mask_kind="spot", metric="general_rise", subset="english", value=rise / 2),
                 row(model="m", k_percent=k, granularity="per_tensor", mask_kind="spot", metric="code_rise", subset="code", value=9.0)]
    rows += [row(model="m", k_percent=1.0, granularity="global", mask_kind="random_uniform", seed=s, metric="code_rise",
                 subset="code", value=v) for s, v in ((0, 0.1), (1, 0.3))]
    # rows the headline must not mix in: a likelihood set's loss, a part of the code rise, another ablation mode
    rows += [row(model="m", mask_kind="baseline", metric="loss", subset="humaneval", value=100.0),
             row(model="m", k_percent=1.0, granularity="global", mask_kind="spot", metric="code_rise",
                 subset="code:unseen", value=7.0),
             row(model="m", k_percent=1.0, granularity="global", mask_kind="spot", mode="mean", metric="code_rise",
                 subset="code", value=8.0)]
    return rows


def test_run_headline_picks_one_percent_global_and_averages_seeds():
    h = run_headline(fake_rows())
    assert h["k_percent"] == 1.0 and h["model"] == "m" and h["baseline_loss"] == 3.0
    assert h["spot.code_rise"] == 0.5 and h["spot.general_rise"] == 0.25
    assert abs(h["random_uniform.code_rise"] - 0.2) < 1e-12
    assert h["spot.selectivity"] is None and h["code_over_general.code_rise"] is None
    assert run_headline(fake_rows(), 0.1)["spot.code_rise"] == 0.05


def test_index_lists_runs_with_links(tmp_path):
    a = tmp_path / "default"
    write_json(a / "metrics.json", fake_rows())
    write_json(a / "manifest.json", {"params": {"model": "smollm2-135m", "languages": ["go", "rust"]},
                                     "stage_seconds": {"01_scoring": 10.0, "04_ablation": 5.5}})
    for s in ("01_scoring", "04_ablation"):
        write_text(a / f"{s}.html", "<html></html>")
    write_text(tmp_path / "half" / "03_selection.html", "<html></html>")
    (tmp_path / "empty").mkdir()
    table = collect(tmp_path)
    assert list(table.run) == ["default", "half"]
    first = table.iloc[0]
    assert first.model == "smollm2-135m" and first.seconds == 15.5 and first.languages == 2
    page = write_index(tmp_path).read_text()
    assert 'href="default/01_scoring.html"' in page and 'href="default/04_ablation.html"' in page
    assert 'href="half/03_selection.html"' in page and "empty" not in page and "<td data-label=\"time\">16 s</td>" in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    for f in ("metrics.json", "manifest.json", "01_scoring.html"):  # every file of the run is linked
        assert f'href="default/{f}"' in page


def test_index_marks_runs_git_does_not_track_as_local(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for run in ("committed", "tiny"):
        write_json(tmp_path / run / "metrics.json", fake_rows())
        write_text(tmp_path / run / "figures" / "04_collapse_curves.png", "png")
    subprocess.run(git + ["add", "committed"], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    table = collect(tmp_path).set_index("run")
    assert not table.loc["committed", "local"] and table.loc["tiny", "local"]
    page = write_index(tmp_path).read_text()
    assert page.count("tiny <i>(local, not committed)</i>") == 2  # its table row and its section
    assert "committed <i>(local" not in page
    assert 'href="tiny/figures/04_collapse_curves.png"' in page


def test_durations_and_rises_read_as_in_the_readme():
    assert [format_seconds(s) for s in (9.6, 927, 1539.4, 7530)] == ["10 s", "15 min 27 s", "25 min 39 s", "2 h 05 min"]
    assert [format_rise(r) for r in (16.58, 0.36, 0.004, -0.2, None)] == ["+1,658%", "+36%", "+0.4%", "−20%", "–"]
    assert [format_rise(r) for r in (-0.00003, 0.00042, 0.0, 0.00096, 2e-9)] == ["−0.003%", "+0.04%", "0%", "+0.1%",
                                                                    "+0.0000002%"]


def test_table_cells_keep_small_values_and_never_show_negative_zero():
    assert format_ci(-0.00023, -0.0009, 0.00004) == "-0.00023 [-0.001, 4e-05]"
    assert [format_ci(v, None, None) for v in (-0.0, 0.0, 1.23456, -2.0, 0.0005)] == \
        ["0.000", "0.000", "1.235", "-2.000", "0.001"]


def test_runs_with_finds_other_runs(tmp_path):
    for run in ("default", "gemma3-270m", "tiny"):
        (tmp_path / run / "masks" / "spot").mkdir(parents=True)
    (tmp_path / "default" / "masks" / "spot" / "k1_global.safetensors").write_bytes(b"x")
    (tmp_path / "gemma3-270m" / "masks" / "spot" / "k1_global.safetensors").write_bytes(b"x")
    found = runs_with_mask("spot", 1.0, exclude="default", runs_dir=tmp_path)
    assert list(found) == ["gemma3-270m"]


def test_cross_model_summary_and_profiles(tmp_path):
    import torch
    from spot_utils import save_masks
    from spot_utils.report.cross_model import cross_model
    runs, reports = tmp_path / "runs", tmp_path / "reports"
    for run, n_layers in (("a", 4), ("b", 2)):
        spot = {f"model.layers.{i}.mlp.up_proj.weight": torch.zeros(4, 4, dtype=torch.bool) for i in range(n_layers)}
        spot[f"model.layers.{n_layers - 1}.mlp.up_proj.weight"][0] = True
        spot["model.layers.0.input_layernorm.weight"] = torch.tensor([True, False, False, False])
        save_masks(runs / run / "masks" / "spot" / "k1_global.safetensors", spot, {"model": f"model-{run}"})
        save_masks(runs / run / "masks" / "shared" / "k1_global.safetensors", {"w": torch.tensor([True, False])}, {})
        save_masks(runs / run / "masks" / "union" / "k1_global.safetensors", {"w": torch.tensor([True, True])}, {})
    write_json(reports / "a" / "metrics.json", fake_rows())
    summary, profiles = cross_model(["a", "b"], 1.0, runs, reports)
    a, b = summary.set_index("run").loc["a"], summary.set_index("run").loc["b"]
    assert a.model == "model-a" and a.spot_total == 5 and a.spot_in_vectors == 1 and a.shared_over_union == 0.5
    assert a.spot_code_rise_at_1pct == 0.5 and pd.isna(b.spot_code_rise_at_1pct)
    assert abs(a.random_uniform_code_rise_at_1pct - 0.2) < 1e-12  # mean over its seeds
    last = profiles[(profiles.by == "depth") & (profiles.group == 0.9)].set_index("label")
    assert last.loc["a (model-a)", "selected"] == 4 and last.loc["b (model-b)", "selected"] == 4  # last layers line up


def test_commit_date_comes_from_the_repository_when_reports_are_outside_it(tmp_path):
    from spot_utils.base.paths import REPO_ROOT
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "log", "-1", "--format=%H %cs"], capture_output=True,
                          text=True, check=True).stdout.split()
    write_json(tmp_path / "r" / "manifest.json", {"params": {"model": "m"}, "git_commit": head[0]})
    write_json(tmp_path / "r" / "metrics.json", fake_rows())
    assert collect(tmp_path).iloc[0].commit_date == head[1]


def test_readme_results_block_is_what_the_committed_reports_render():
    from pathlib import Path
    from spot_utils.report.readme_block import readme_block, results_table
    root = Path(__file__).resolve().parents[2]
    runs, block = readme_block((root / "README.md").read_text(encoding="utf-8"))
    assert runs and all((root / "reports" / run / "metrics.json").is_file() for run in runs)
    assert block == results_table(runs, root / "reports").strip("\n")


def _toy_run(results, reports):
    """Stage 04's rows for synthetic (labels, frames) results, written as reports/toy/metrics.json."""
    import numpy as np
    from spot_utils.experiment import ablation_loop
    from spot_utils.analysis import paired_tests
    from test_stage04 import CODE, REFS, VOCAB
    baseline = results[0][1]
    rows = []
    for labels, frames in results:
        rows += ablation_loop.frame_rows(frames, None if labels["mask_kind"] == "baseline" else baseline,
                                         dict(labels, model="toy"), 100, VOCAB)
    rows += paired_tests.paired_rows(results, baseline, CODE, REFS, VOCAB, n_boot=200, matched_boot=1000)
    write_json(reports / "toy" / "metrics.json", [row(**{k: v for k, v in r.items() if k in row()}) for r in rows])
    return rows


def test_results_table_marks_destroyed_points_and_states_a_computed_verdict(tmp_path):
    import numpy as np
    from spot_utils.report.readme_block import results_table, update_readme
    from test_stage04 import _synthetic_results
    # the spot's intact point (on random damage's curve) at 0.1%, at 1% code collapses (17 nats) with English intact
    relabel = {1.0: 0.1, 5.0: 1.0}
    results = [(dict(lab, k_percent=relabel[lab["k_percent"]]) if lab["mask_kind"] == "spot" else lab, f)
               for lab, f in _synthetic_results(np.random.default_rng(0))]
    rows = _toy_run(results, tmp_path)
    text = results_table(["toy"], tmp_path)
    lines = {line.split(" | ")[0] + " " + line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ")}
    assert lines["| 0.1% spot"].count("destroyed") == 0 and "†" not in lines["| 0.1% spot"]
    assert lines["| 1% spot"].count("code collapses, general text intact") == 2 and "†" in lines["| 1% spot"]
    assert "destroyed" not in lines["| 1% spot"] and lines["| 1% spot"].count("†") == 1  # code's cell alone
    assert "(+" in lines["| 1% random_uniform"]  # three seeds: their range
    assert "is not distinguishable from random damage" in text and "**Verdict.** toy: the spot" in text
    h = run_headline(rows, 1.0)  # the index: the collapsed 1% point marked, the verdict per configuration
    assert h["spot.destroyed"] is True and h["spot.collapse"] is True and h["random_uniform.collapse"] is False
    assert h["spot.verdicts"] == {"global": ["none", "none"]}
    assert h["spot.sensitivity"] == {"global": ["Under the any-subset rule the verdict is the same."] * 2}
    assert "global: none / none" in index_html(pd.DataFrame([dict(run="toy", **h)]))
    # the index leads with the finding: a figure, the README's verdict sentence, each verdict with its point
    from spot_utils.report.tables import model_summary
    page = write_index(tmp_path).read_text()
    sentence = model_summary(rows, ["global"], ["english", "english_modern"], "toy")
    assert page.index('<img src="data:image/png;base64,') < page.index("<table>")
    assert html.escape(sentence) in page and f"**Verdict.** {sentence}" in text
    assert "against literary English <b>none</b> (" in page
    assert "code collapses, general text intact at k = 1% (code +" in page and "verdict is the same" in page
    # the README block is rewritten from the reports it names, and nothing else changes
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results: toy -->\nstale\n<!-- /results -->\noutro\n")
    update_readme(readme, tmp_path)
    assert readme.read_text() == "intro\n<!-- results: toy -->\n" + text + "\n<!-- /results -->\noutro\n"


def test_results_table_reads_the_spot_below_its_k_grid_when_every_k_is_destroyed(tmp_path):
    import numpy as np
    from spot_utils.report import tables as ablation_tables
    from spot_utils.report.readme_block import results_table
    from test_stage04 import _synthetic_results
    # every spot k destroyed; the top 1 entry alone intact (the old 1% point), the top 10 destroyed
    results = []
    for lab, f in _synthetic_results(np.random.default_rng(1)):
        if lab["mask_kind"] == "spot" and lab["k_percent"] == 1.0:
            results.append((dict(lab, mask_kind="top_entries", k_percent=None, n_entries=1), f))
        elif lab["mask_kind"] == "spot":
            results += [(lab, f), (dict(lab, k_percent=1.0), f),
                        (dict(lab, mask_kind="top_entries", k_percent=None, n_entries=10), f)]
        else:
            results.append((lab, f))
    rows = _toy_run(results, tmp_path)
    text = results_table(["toy"], tmp_path)
    table = [line.split(" | ")[:2] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert table[1] == ["| top 1", "spot (top 1 entries)"]  # the first row under the header
    assert ["| 1%", "spot"] in table and ["| top 10", "spot (top 10 entries)"] not in table  # destroyed: not a headline
    # the verdict on the spot reads its whole curve: the intact top-1 point lies on random damage's curve
    assert ablation_tables.verdict(rows, "global", "english") == "none"
    assert "is not distinguishable from random damage" in text


def test_the_index_names_the_stages_that_ran_at_other_code(tmp_path):
    last, older = "b" * 40, "a" * 40
    write_json(tmp_path / "r" / "manifest.json", {"params": {"model": "m"}, "git_commit": last, "stage_commits": {
        "01_scoring": older, "02_aggregation": older, "04_ablation": last}})
    write_json(tmp_path / "r" / "metrics.json", fake_rows())
    page = index_html(collect(tmp_path))
    assert "<code>bbbbbbb</code>" in page and "<br>01, 02: <code>aaaaaaa</code>" in page
