"""The stage notebooks execute under papermill on the tiny params file and write a complete report."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spot_utils.experiment.stages import STAGES
from spot_utils.experiment.params import load_params

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_writes_the_whole_report(tmp_path):
    env = dict(os.environ, SPOT_RUNS_DIR=str(tmp_path / "runs"), SPOT_REPORTS_DIR=str(tmp_path / "reports"),
               SPOT_DATA_DIR=str(tmp_path / "data"), MPLBACKEND="Agg")
    report = tmp_path / "reports" / "tiny"
    left_over = [report / "figures" / "04_damage_paper_retired_reference.png",  # a figure 04 no longer draws
                 report / ".04_ablation.4242.ipynb"]  # a killed sitting
    not_a_stage_output = report / "figures" / "notes_by_hand.png"
    (report / "figures").mkdir(parents=True)
    for path in [*left_over, not_a_stage_output]:
        path.write_text("stale")
    proc = subprocess.run([sys.executable, "-m", "spot_utils.pipeline", "params/tiny.yaml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not any(path.exists() for path in left_over)
    assert not_a_stage_output.read_text() == "stale"  # cleaning removes what the stage table names, nothing else
    for stage in STAGES:
        assert (report / f"{stage}.ipynb").is_file() and (report / f"{stage}.html").is_file()
    figures = sorted(p.name for p in (report / "figures").glob("*.png") if p != not_a_stage_output)
    assert all([s for s in STAGES.values() if s.draws(f)] == [STAGES[s] for s in STAGES if f.startswith(s[:3])]
               for f in figures)  # the stage table lists every figure under the stage that drew it, and only there
    assert {"02_score_distribution.png", "03_spot_layers_modules.png", "05_jaccard.png"} <= set(figures)
    for configuration in ("paper", "global"):  # both configurations against both general-text references
        for ref in ("english", "english_modern"):
            assert {f"04_collapse_curves_{configuration}_{ref}.png", f"04_damage_{configuration}_{ref}.png"} <= set(figures)
    manifest = json.loads((report / "manifest.json").read_text())
    assert set(manifest["stage_seconds"]) == set(STAGES) and manifest["versions"]["torch"]
    rows = json.loads((report / "metrics.json").read_text())
    at_1 = [r for r in rows if r["k_percent"] == 1.0 and r["metric"] == "loss_rise"]
    for kind in ("spot", "random", "random_uniform"):
        subsets = {r["subset"] for r in at_1 if r["mask_kind"] == kind}
        assert {"go", "python", "english"} <= subsets, kind
    matched = [r for r in rows if r["metric"] == "matched_excess"]
    assert {(r["configuration"], r["reference"]) for r in matched} == {
        (c, ref) for c in ("paper", "global") for ref in ("english", "english_modern")}
    assert all((r["value"] is None) == (r["status"] is not None) for r in matched)  # a missing value says why
    assert {r["granularity"] for r in rows if r["configuration"] == "paper" and r["mask_kind"] == "spot"} == {"per_tensor"}
    # the authors' damage mask: written by stage 03 and ablated at its own k values, in the paper configuration only
    authors = {(r["configuration"], r["k_percent"]) for r in rows if r["mask_kind"] == "authors_spot"
               and r["metric"] == "n_selected" and r["value"]}
    assert authors and {c for c, _ in authors} == {"paper"}
    assert {k for _, k in authors} <= set(load_params(ROOT / "params/tiny.yaml")["authors_spot_k"])
    assert any(r["mask_kind"] == "authors_spot" and r["metric"] == "matched_excess" for r in rows)
    uniform = next(r for r in rows if r["metric"] == "uniform_loss")
    assert uniform["value"] == pytest.approx(math.log(uniform["n"]))
    import pandas as pd
    layers = pd.read_csv(report / "03_layers_modules.csv")  # what 06_explore maps without runs/
    spot = layers[(layers.kind == "spot") & (layers.k_percent == 1.0)]
    assert spot.selected.sum() == next(r["value"] for r in rows if r["mask_kind"] == "spot" and r["k_percent"] == 1.0
                                       and r["metric"] == "n_selected" and r["configuration"] == "global")
    tuning = pd.DataFrame(json.loads((report / "07_tuning.json").read_text()))  # stage 07, tuning on in tiny.yaml
    gains = tuning[tuning.metric == "tuning_code_gain"]
    assert set(gains.arm) == {"sparse", "lora", "full"} and {"code", "code:held_out"} <= set(gains.subset)
    assert {"07_gain_vs_trainable.png", "07_gain_vs_forgetting_english.png"} <= set(figures)
    explore = (report / "06_explore.html").read_text()  # the default view, read from reports/ alone
    assert "mask kind spot · k = 1%" in explore and "Damage-matched comparison" in explore and "<img" in explore
    assert "Traceback" not in explore


def test_a_failing_stage_stops_the_run_and_keeps_its_notebook(tmp_path):
    env = dict(os.environ, SPOT_RUNS_DIR=str(tmp_path / "runs"), SPOT_REPORTS_DIR=str(tmp_path / "reports"),
               SPOT_DATA_DIR=str(tmp_path / "data"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-m", "spot_utils.pipeline", "params/tiny.yaml", "--stages",
                           "02_aggregation", "03_selection"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1
    assert "01_scoring" in proc.stderr and "missing" in proc.stderr  # names the stage to run first
    assert (tmp_path / "reports" / "tiny" / "02_aggregation.ipynb").is_file()
    assert not (tmp_path / "reports" / "tiny" / "03_selection.ipynb").exists()
    import zmq
    if zmq.has("curve"):  # the kernel's connection is encrypted: no warning about plain TCP
        assert "02_aggregation" in proc.stdout and "without encryption" not in proc.stdout + proc.stderr


def test_strip_progress_keeps_results_and_warnings_drops_bars(tmp_path):
    import nbformat
    from spot_utils.pipeline import strip_progress
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="\rloss:   0%|          | 0/28 [00:00<?, ?seq/s]"
                               "\x1b[A\n\r                     \x1b[A\rmasks:  52%|█████▏    | 11/21 [04:40<05:58, 35.82s/it]\n"),
        nbformat.v4.new_output("stream", name="stdout", text="17 masks evaluated\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something real\n\r  0%| | 0/10 [00:00<?, ?it/s]"),
        nbformat.v4.new_output("display_data", data={  # a tqdm widget, saved without its state
            "text/plain": "Loading weights:   0%|          | 0/272 [00:00<?, ?it/s]",
            "application/vnd.jupyter.widget-view+json": {"model_id": "a", "version_major": 2, "version_minor": 0}}),
        nbformat.v4.new_output("display_data", data={  # any other widget stays
            "text/plain": "Dropdown(options=('spot',))",
            "application/vnd.jupyter.widget-view+json": {"model_id": "b", "version_major": 2, "version_minor": 0}}),
    ]
    lmeval = nbformat.v4.new_code_cell("y")
    lmeval.outputs = [nbformat.v4.new_output("stream", name="stderr", text=(
        "`pretrained` model kwarg is not of type `str`. Many other model arguments may be ignored.\n"
        "Passed an already-initialized model through `pretrained`, assuming single-process call\n"))]
    nb.cells += [cell, lmeval]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    strip_progress(path)
    outs = nbformat.read(path, as_version=4).cells[0].outputs
    assert [(o.get("name"), o.get("text") or o.data["text/plain"]) for o in outs] == [
        ("stdout", "17 masks evaluated\n"), ("stderr", "UserWarning: something real\n"),
        (None, "Dropdown(options=('spot',))")]
    outs = nbformat.read(path, as_version=4).cells[1].outputs  # expected lm-eval notices: counted, not shown
    assert [(o.name, o.text) for o in outs] == [("stdout", "(2 expected lm-eval notice(s) about the loaded model hidden)\n")]


def test_git_commit_ignores_rewritten_reports_but_not_code(tmp_path, monkeypatch):
    from spot_utils import pipeline
    repo = tmp_path / "repo"
    (repo / "reports").mkdir(parents=True)
    (repo / "reports" / "r.txt").write_text("a")
    (repo / "code.py").write_text("a")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    monkeypatch.setattr(pipeline, "REPO_ROOT", repo)
    head = pipeline.git_commit()
    assert len(head) == 40
    (repo / "reports" / "r.txt").write_text("b")  # a run rewrote its report
    assert pipeline.git_commit() == head
    (repo / "code.py").write_text("b")
    assert pipeline.git_commit() == head + "+dirty"


def test_a_stage_names_the_stage_to_run_first(tmp_path, monkeypatch):
    import pytest
    from spot_utils.experiment import stage
    monkeypatch.setattr(stage, "run_dir", lambda params: tmp_path)
    with pytest.raises(FileNotFoundError, match=r"reads the outputs of 02_aggregation, 03_selection.*notebooks/02_aggregation"):
        stage.check_inputs({"run_name": "r"}, "04_ablation")
    (tmp_path / "02_aggregation.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"outputs of 03_selection,? which.*run_name = 'r'"):
        stage.check_inputs({"run_name": "r"}, "04_ablation")
    (tmp_path / "03_selection.json").write_text("{}")
    stage.check_inputs({"run_name": "r"}, "04_ablation")
    stage.check_inputs({"run_name": "r"}, "01_scoring")  # the first stage needs nothing
