"""Extension points are one-place changes: a criterion, a control mask, a mask kind built from stage 03's outputs, a
metric group and a derived metric registered from this file alone run through the tiny pipeline's stage code (score,
aggregate, select, plan, ablate and evaluate, paired tests) and, in a subprocess, through the tiny pipeline itself;
a stage registered from this file alone runs in the tiny pipeline in its place; names without an implementation are
refused and unknown names fail with the table's names."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import random_sequences
from spot_utils import aggregate, ablated, mask_count, save_masks, score, scoped_parameters
from spot_utils.analysis.metric_names import METRIC_NAMES, register_derived_metric
from spot_utils.base.run_files import mask_path
from spot_utils.method.mask_kinds import MASK_KINDS, controls, register_control, register_mask_kind
from spot_utils.method.masks import load_masks
from spot_utils.experiment.ablation_loop import ablate_and_evaluate
from spot_utils.experiment.ablation_plan import controls_match, mask_plan, plan_metrics
from spot_utils.measure.metric_groups import METRIC_GROUPS, Evaluation, build_evaluators, register_metric_group
from spot_utils.analysis.paired_tests import paired_rows
from spot_utils.experiment.params import OPTIONS, validate
from spot_utils.method.scoring import CRITERIA, register_criterion
from spot_utils.method.selection import code_minus_general, code_over_general, configuration_spot, general_reference

ROOT = Path(__file__).resolve().parents[2]
CODE = ["go", "rust"]


@pytest.fixture
def registered():
    """Register a toy entry in each table for one test; remove them afterwards."""
    added = []

    def add(table, register, name, **kwargs):
        register(name, **kwargs)
        added.append((table, name))
    yield add
    for table, name in added:
        table.pop(name, None)


def abs_grad(acc, g, p):
    acc.add_(g.float().abs())


def first_entries(spot, seed, model, shapes):
    """Toy control: the first entries of every tensor, as many as the spot holds there."""
    out = {}
    for n, m in spot.items():
        mask = torch.zeros(m.numel(), dtype=torch.bool)
        mask[: int(m.sum())] = True
        out[n] = mask.view(m.shape)
    return out


def spot_or_code_over_general(spot, params, k_percent, configuration):
    """Toy mask kind built from stage 03's outputs: the entries of the configuration's spot or of code_over_general
    at k, both read from stage 03's mask files."""
    own = load_masks(mask_path(params, "spot", k_percent, configuration))[0]
    contrast = load_masks(mask_path(params, "code_over_general", k_percent))[0]
    return {n: own[n] | contrast[n] if n in contrast else own[n] for n in own}


def log_rise_gap(ablated_losses, baseline_losses, code_subsets, reference):
    """Toy derived metric: ln(1 + code rise) − ln(1 + general rise), computed naively from the item losses."""
    rise = {s: np.mean(ablated_losses[s]) / np.mean(baseline_losses[s]) - 1 for s in [*code_subsets, reference]}
    return math.log1p(np.mean([rise[s] for s in code_subsets])) - math.log1p(rise[reference])


TOY_KIND, TOY_METRIC = "toy_spot_or_contrast", "toy_log_rise_gap"


def register_toy_extensions(register):
    """Register the toy mask kind and the toy derived metric through `register(table, register_fn, name, **kw)`
    (the `registered` fixture in this process; a plain call in the pipeline's notebook kernels)."""
    register(MASK_KINDS, register_mask_kind, TOY_KIND, build=spot_or_code_over_general, stage="04_ablation",
             ablation="stage03")
    register(METRIC_NAMES, register_derived_metric, TOY_METRIC, derive=log_rise_gap, unit="ln ratio",
             direction="higher_is_worse")


def confidence_group(params, model, tokenizer, loss_subsets, work_dir):
    """Toy metric group: mean top-1 probability of the next token per held-out sequence."""
    def run():
        rows = []
        with torch.no_grad():
            for subset, seqs in loss_subsets.items():
                for i, s in enumerate(seqs):
                    probs = model(input_ids=s[None].long()).logits[0, :-1].float().softmax(-1)
                    rows.append(dict(subset=subset, item=i, confidence=float(probs.max(-1).values.mean())))
        return pd.DataFrame(rows)
    return Evaluation(run, {s: len(v) for s, v in loss_subsets.items()})


def test_a_registered_criterion_control_and_metric_group_run_through_the_stages(registered, llama, tmp_path,
                                                                                 monkeypatch):
    import spot_utils.base.run_files as runs
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    registered(CRITERIA, register_criterion, "toy_abs_grad", fold=abs_grad, per_sequence=True)
    registered(MASK_KINDS, register_control, "toy_first", build=first_entries, matched_on="per_tensor")
    registered(METRIC_GROUPS, register_metric_group, "toy_confidence", build=confidence_group,
               item_metrics=("confidence",), cost="heavy")
    register_toy_extensions(registered)
    model, tok = llama
    params = validate(dict(run_name="toy", criterion="toy_abs_grad", k_grid=[1.0, 5.0], k_detail=5.0,
                           random_seeds=[0], n_uniform_seeds=1, batch_size=3, bootstrap_samples=100,
                           configurations=["global"]))

    # stage 01: the new criterion against a naive batch-1 reference
    seqs = {lang: random_sequences(4, seed=i) for i, lang in enumerate(CODE + ["english"])}
    scores = {lang: score(model, s, criterion=params["criterion"], batch_size=params["batch_size"])
              for lang, s in seqs.items()}
    scoped = scoped_parameters(model)
    ref = {n: torch.zeros(p.shape) for n, p in scoped.items()}
    for s in seqs["go"]:
        loss = torch.nn.functional.cross_entropy(model(input_ids=s[None]).logits[0, :-1].float(), s[1:])
        for n, g in zip(scoped, torch.autograd.grad(loss, list(scoped.values()))):
            ref[n] += g.float().abs()
    for n in ref:
        torch.testing.assert_close(scores["go"][n], ref[n], rtol=1e-4, atol=1e-7)

    # stages 02-03: aggregate and the masks stage 04 reads
    A = aggregate({lang: scores[lang] for lang in CODE}, params["aggregation"])
    G = general_reference(scores["english"], len(CODE), params["aggregation"])
    for k in params["k_grid"]:
        save_masks(runs.mask_path(params, "spot", k, "global"), configuration_spot(A, k, "global"), {})
        save_masks(runs.mask_path(params, "code_over_general", k), code_over_general(A, G, k), {})
        save_masks(runs.mask_path(params, "code_minus_general", k), code_minus_general(A, G, k), {})

    # stage 04: the control is planned at k_detail only and matched per tensor; the metric group is heavy
    plan = list(mask_plan(params, model))
    toy = [(lab, m) for lab, m in plan if lab["mask_kind"] == "toy_first"]
    assert [lab["k_percent"] for lab, _ in toy] == [5.0] and toy[0][0]["control_of"] == "spot"
    [(toy_kind_labels, toy_kind_mask)] = [(lab, m) for lab, m in plan if lab["mask_kind"] == TOY_KIND]
    spot_5 = configuration_spot(A, 5.0, "global")
    union = {n: m | code_over_general(A, G, 5.0).get(n, torch.zeros_like(m)) for n, m in spot_5.items()}
    assert toy_kind_labels["k_percent"] == 5.0 and all(torch.equal(toy_kind_mask[n], union[n]) for n in union)
    assert controls_match(plan)
    assert "toy_confidence" in plan_metrics(dict(mask_kind="spot", k_percent=5.0), params)
    assert "toy_confidence" not in plan_metrics(toy[0][0], params)
    subsets = {lang: random_sequences(6, seed=10 + i) for i, lang in enumerate(CODE + ["english"])}  # 6: Wilcoxon
    ev = build_evaluators(params, model, tok, subsets, tmp_path)
    assert list(ev.groups) == ["loss", "toy_confidence"]
    rows, results, baseline = ablate_and_evaluate(model, plan, ev, params)
    rows += paired_rows(results, baseline, CODE, "english", 10_000, n_boot=100, matched_boot=200)
    df = pd.DataFrame(rows)
    conf = df[df.metric == "confidence"]
    assert set(conf.mask_kind) == {"baseline", "spot", "random_uniform", "code_over_general"}
    spot = conf[(conf.mask_kind == "spot") & (conf.subset == "go")]
    with ablated(model, next(m for lab, m in plan if lab["mask_kind"] == "spot" and lab["k_percent"] == 5.0)):
        expected = confidence_group(params, model, tok, {"go": subsets["go"]}, None).run().confidence.mean()
    assert spot.value.tolist() == pytest.approx([expected])
    toy_rows = df[df.mask_kind == "toy_first"]
    assert {"loss_rise", "code_rise", "p_wilcoxon_loss"} <= set(toy_rows.metric)
    assert set(df[df.metric == "p_holm_wilcoxon_confidence"].mask_kind) == {"spot", "code_over_general"}
    assert int(toy_rows[toy_rows.metric == "n_selected"].value.iloc[0]) == mask_count(toy[0][1])
    assert_toy_metric_matches_the_rises(df)
    assert TOY_KIND in set(df[df.metric == "matched_excess"].mask_kind)

    # a control whose builder breaks its promise fails the count check
    MASK_KINDS.pop("toy_first")
    registered(MASK_KINDS, register_control, "toy_first", build=lambda spot, seed, model, shapes:
               {n: torch.ones_like(m) for n, m in spot.items()}, matched_on="total")
    assert not controls_match(list(mask_plan(params, model)))


def assert_toy_metric_matches_the_rises(df: pd.DataFrame):
    """Every point's toy derived metric equals ln(1 + code_rise) − ln(1 + general_rise) of its own rows."""
    keys = ["configuration", "mask_kind", "k_percent", "n_entries", "seed", "mode"]
    df = df.assign(**{c: df[c].astype(str) for c in keys})
    code = df[(df.metric == "code_rise") & (df.subset == "code")].set_index(keys).value
    for r in df[df.metric == TOY_METRIC].itertuples():
        key = tuple(getattr(r, c) for c in keys)
        general = df[(df.metric == "general_rise") & (df.reference == r.reference)].set_index(keys).value
        if r.destroyed or pd.notna(r.status):  # destroyed or code_collapse: not read
            assert r.value is None or np.isnan(r.value)
            continue
        assert r.value == pytest.approx(math.log1p(code[key]) - math.log1p(general[key]), rel=1e-9, abs=1e-12)
    assert len(df[df.metric == TOY_METRIC]) == len(df[df.metric == "general_rise"])


SITECUSTOMIZE = """import importlib.abc, importlib.util, sys
sys.path[:0] = {paths!r}


class RegisterAfterPlan(importlib.abc.MetaPathFinder):
    # registers the toys once stage code has imported the ablation loop: a kernel starts without importing torch
    def find_spec(self, name, path, target=None):
        if name != "spot_utils.experiment.ablation_loop":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            import test_registries
            test_registries.register_toy_extensions(lambda table, register, name, **kw: register(name, **kw))
        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, RegisterAfterPlan())
"""


@pytest.mark.slow
def test_a_toy_mask_kind_and_derived_metric_run_through_the_tiny_pipeline(tmp_path):
    """The toys registered by this file (in every kernel, through a sitecustomize on PYTHONPATH) are ablated by
    stage 04 of the tiny pipeline, carry the derived metric and appear in stage 04's tables."""
    hook = tmp_path / "hook"
    hook.mkdir()
    paths = [str(ROOT / "tests"), str(Path(__file__).parent)]
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE.format(paths=paths))
    env = dict(os.environ, SPOT_RUNS_DIR=str(tmp_path / "runs"), SPOT_REPORTS_DIR=str(tmp_path / "reports"),
               SPOT_DATA_DIR=str(tmp_path / "data"), MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    stages = ["01_scoring", "02_aggregation", "03_selection", "04_ablation"]
    proc = subprocess.run([sys.executable, "-m", "spot_utils.pipeline", "params/tiny.yaml", "--stages", *stages],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = tmp_path / "reports" / "tiny"
    df = pd.DataFrame(json.loads((report / "metrics.json").read_text()))
    toy = df[df.mask_kind == TOY_KIND]
    assert set(toy.configuration) == {"paper", "global"}
    assert {"loss_rise", "code_rise", "matched_excess"} <= set(toy.metric)
    assert (df[df.metric == TOY_METRIC].reference.dropna().unique().tolist() == ["english", "english_modern"])
    assert_toy_metric_matches_the_rises(df)
    assert set(df.schema_version) == {3}
    assert TOY_KIND in (report / "04_ablation.html").read_text()  # shown in stage 04's tables


def test_names_without_an_implementation_are_refused():
    with pytest.raises(ValueError, match="no implementation"):
        register_criterion("toy_empty")
    with pytest.raises(TypeError, match="fold must be callable"):
        register_criterion("toy_empty", fold="abs")
    with pytest.raises(ValueError, match="no implementation"):
        register_control("toy_empty", build=None, matched_on="total")
    with pytest.raises(ValueError, match="matched_on"):
        register_control("toy_empty", build=first_entries, matched_on="shape")
    with pytest.raises(ValueError, match="no implementation"):
        register_metric_group("toy_empty", build=None, item_metrics=("x",), cost="cheap")
    with pytest.raises(ValueError, match="cost"):
        register_metric_group("toy_empty", build=confidence_group, item_metrics=("x",), cost="free")
    with pytest.raises(ValueError, match="already registered"):
        register_criterion("fisher", fold=abs_grad)
    assert "toy_empty" not in CRITERIA and "toy_empty" not in MASK_KINDS and "toy_empty" not in METRIC_GROUPS


def test_unknown_names_fail_with_the_tables_names(llama, tmp_path):
    model, tok = llama
    with pytest.raises(ValueError, match="unknown criterion 'nope'; registered: grad_x_weight, abs_grad_x_weight, "
                                         "fisher, magnitude"):
        score(model, random_sequences(2), criterion="nope")
    with pytest.raises(ValueError, match=r"criterion: 'nope' is not one of grad_x_weight, abs_grad_x_weight"):
        validate(dict(criterion="nope"))
    with pytest.raises(ValueError, match=r"configurations: \['cube'\] is not a non-empty list from paper, global"):
        validate(dict(configurations=["cube"]))
    with pytest.raises(ValueError, match="unknown metric group 'nope'; registered: loss, likelihood, mc"):
        build_evaluators(validate({}), model, tok, {}, tmp_path, groups=["nope"])
    with pytest.raises(ValueError, match="unknown mask kind 'nope'; registered: baseline, spot, authors_spot, "
                                         "random_uniform, random, magnitude, spot_norms"):
        MASK_KINDS.pick("nope")


def test_a_registered_criterion_is_accepted_by_the_params_until_removed(registered):
    with pytest.raises(ValueError, match="criterion"):
        validate(dict(criterion="toy_abs_grad"))
    registered(CRITERIA, register_criterion, "toy_abs_grad", fold=abs_grad)
    assert validate(dict(criterion="toy_abs_grad"))["criterion"] == "toy_abs_grad"


def test_control_colours_come_from_the_control_table(registered):
    from spot_utils.report.plots import MASK_COLORS, mask_color
    colours = [mask_color(kind) for kind in controls()]
    assert len(set(colours)) == len(colours)
    registered(MASK_KINDS, register_control, "toy_first", build=first_entries, matched_on="per_tensor")
    assert mask_color("toy_first") not in set(colours) | set(MASK_COLORS.values())


def test_notebook_parameter_comments_list_exactly_the_registered_options():
    checked = set()
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = next(c for c in json.loads(nb_path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        for line in "".join(cell["source"]).splitlines():
            key, _, comment = line.partition("#")
            key = key.split("=")[0].strip()
            listed = re.search(r"\w+(?:\s*\|\s*\w+)+", comment)
            if key in OPTIONS and listed:
                assert [x.strip() for x in listed.group(0).split("|")] == [str(o) for o in OPTIONS[key]], \
                    f"{nb_path.name}: {key}"
                checked.add(key)
    assert {"criterion", "aggregation", "configurations", "score_include", "overlong"} <= checked


TOY_STAGE = "01b_toy"
TOY_NOTEBOOK = [  # the toy stage: it records which stages had finished when it ran and writes one file and one figure
    ('run_name = "tiny"', ["parameters"]),
    ("from spot_utils.base import io, run_files\n"
     "P = dict(run_name=run_name)\n"
     "finished = [s for s in ('01_scoring', '02_aggregation') if run_files.stage_record_path(P, s).is_file()]\n"
     "io.write_text(run_files.report_dir(P) / '01b_toy.txt', ' '.join(finished))\n"
     "io.write_text(run_files.figure_path(P, '01b_toy_drawn'), 'drawn')", []),
]
REGISTER_AND_RUN = """import sys
from spot_utils.experiment.stages import register_stage
register_stage("01b_toy", needs=("01_scoring",), reads="stage records", report_files=("01b_toy.txt",),
               figures=("01b_toy_*",), notebook=sys.argv[1])
from spot_utils import pipeline
pipeline.main(sys.argv[2:])
"""


def test_a_registered_stage_runs_in_order_and_its_outputs_are_cleaned_by_name(tmp_path):
    import nbformat
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in TOY_NOTEBOOK]
    notebook.metadata.update(kernelspec=dict(name="python3", display_name="Python 3", language="python"),
                             language_info=dict(name="python"))
    nbformat.write(notebook, str(tmp_path / "toy.ipynb"))
    report = tmp_path / "reports" / "tiny"
    stale = [report / "figures" / "01b_toy_no_longer_drawn.png", report / "01b_toy.txt"]  # an earlier sitting's
    others = [report / "figures" / "02_score_distribution.png", report / "03_layers_modules.csv"]  # not run here
    (report / "figures").mkdir(parents=True)
    for path in stale + others:
        path.write_text("stale")
    env = dict(os.environ, SPOT_RUNS_DIR=str(tmp_path / "runs"), SPOT_REPORTS_DIR=str(tmp_path / "reports"),
               SPOT_DATA_DIR=str(tmp_path / "data"), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", REGISTER_AND_RUN, str(tmp_path / "toy.ipynb"), "params/tiny.yaml",
                           "--stages", TOY_STAGE, "01_scoring"],  # they run in the table's order, not this one
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    manifest = json.loads((report / "manifest.json").read_text())
    assert list(manifest["stage_seconds"]) == ["01_scoring", TOY_STAGE]
    assert (report / "01b_toy.txt").read_text() == "01_scoring"  # 01 had finished when the toy ran
    assert not stale[0].exists() and (report / "figures" / "01b_toy_drawn.png").read_text() == "drawn"
    assert all(path.read_text() == "stale" for path in others)
    assert manifest["stages"][TOY_STAGE]["status"] == "ok"
    assert f'href="{TOY_STAGE}.html"' in (report / "01_scoring.html").read_text()  # the pages list it in its place


def test_the_stage_table_refuses_rows_that_would_break_the_order_or_the_cleaning(tmp_path):
    from spot_utils.experiment.stages import STAGES, register_stage
    notebook = tmp_path / "toy.ipynb"
    notebook.write_text("{}")
    with pytest.raises(ValueError, match="does not run before it"):
        register_stage("01b_toy", needs=("03_selection",), notebook=notebook)
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        register_stage("01b_toy", needs=("nope",), notebook=notebook)
    with pytest.raises(ValueError, match=r"\['04_damage_x'\] already belong to stage '04_ablation'"):
        register_stage("07_toy", figures=("04_damage_x",), notebook=notebook)
    with pytest.raises(ValueError, match=r"\['metrics.json'\] already belong to stage '04_ablation'"):
        register_stage("07_toy", report_files=("metrics.json",), notebook=notebook)
    with pytest.raises(ValueError, match="no notebook"):
        register_stage("07_toy", notebook=tmp_path / "missing.ipynb")
    with pytest.raises(ValueError, match="<number>_<what>"):
        register_stage("toy", notebook=notebook)
    assert "01b_toy" not in STAGES and "07_toy" not in STAGES
