"""The ablation experiment on a tiny model: controls, plan, paired statistics, outliers, cross-ablation."""
import numpy as np
import pandas as pd
import pytest
import torch

from conftest import random_sequences, write_stage03_masks
from spot_utils import (counts_per_tensor, magnitude_per_tensor, mask_count, random_per_tensor, random_uniform,
                        scoped_parameters, select_top_k)
from spot_utils.analysis import paired_tests
from spot_utils.experiment import ablation_loop, ablation_plan
from spot_utils.report import tables as ablation_tables
from spot_utils.measure.metric_groups import build_evaluators
from spot_utils.measure.evaluation import generate_greedy, truncate_at_stop
from spot_utils.analysis import stats
from spot_utils.experiment.params import validate

CODE = ["go", "rust", "python"]


@pytest.fixture
def setup(llama, tmp_path, monkeypatch):
    """A run folder with spot / contrastive masks for a tiny model, and hand-made evaluation subsets."""
    import spot_utils.base.run_files as runs
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    model, tok = llama
    params = validate(dict(run_name="t", model="random:llama", k_grid=[1.0, 5.0], k_detail=5.0,
                           configurations=["paper", "global"], random_seeds=[0, 1], n_uniform_seeds=2,
                           outlier_counts=[1, 10], bootstrap_samples=100, general_eval=["english"],
                           general_references=["english"], authors_spot_k=[1.0, 5.0]))
    scores = {n: p.detach().abs() * (1 + torch.rand(p.shape, generator=torch.Generator().manual_seed(1)))
              for n, p in scoped_parameters(model).items()}
    write_stage03_masks(params, scores, model)
    subsets = {s: random_sequences(6, seed=i) for i, s in enumerate(CODE + ["english"])}
    return model, tok, params, scores, subsets


def test_controls_have_the_spots_counts(llama):
    model, _ = llama
    params = scoped_parameters(model)
    spot = select_top_k({n: p.detach().abs() for n, p in params.items()}, 3.0)
    shapes = {n: tuple(p.shape) for n, p in params.items()}
    for seed in (0, 1, 2):
        assert counts_per_tensor(random_per_tensor(spot, seed)) == counts_per_tensor(spot)
        assert mask_count(random_uniform(spot, seed, shapes)) == mask_count(spot)
    assert counts_per_tensor(magnitude_per_tensor(model, spot)) == counts_per_tensor(spot)
    assert not all(torch.equal(random_per_tensor(spot, 0)[n], random_per_tensor(spot, 1)[n]) for n in spot)
    # the magnitude control takes the largest |θ| of every tensor
    mag = magnitude_per_tensor(model, spot)
    for n, m in mag.items():
        if 0 < int(m.sum()) < m.numel():
            w = params[n].detach().abs()
            assert w[m].min() >= w[~m].max()


def test_plan_covers_both_configurations_and_the_controls(setup):
    model, _, params, _, _ = setup
    plan = list(ablation_plan.mask_plan(params, model))
    kinds = pd.DataFrame([lab for lab, _ in plan]).fillna({"seed": -1})
    assert ablation_plan.controls_match(plan)
    for configuration, granularity in (("global", "global"), ("paper", "per_tensor")):
        at = kinds[(kinds.configuration == configuration)]
        assert set(at.granularity) == {granularity}
        assert set(at[at.k_percent == 1.0].mask_kind) == {"spot", "random_uniform"} | (
            {"authors_spot"} if configuration == "paper" else set())
        # authors_spot at its own k values, in the paper configuration only
        assert sorted(at[at.mask_kind == "authors_spot"].k_percent) == ([1.0, 5.0] if configuration == "paper" else [])
        assert {"random", "magnitude", "code_over_general", "code_minus_general"} <= set(at[at.k_percent == 5.0].mask_kind)
        assert len(at[(at.k_percent == 5.0) & (at.mask_kind == "random")]) == 2
        # random_uniform: its seeds at the headline k (k_detail here), one seed elsewhere
        assert len(at[(at.k_percent == 5.0) & (at.mask_kind == "random_uniform")]) == 2
        assert len(at[(at.k_percent == 1.0) & (at.mask_kind == "random_uniform")]) == 1
        # the spot's norm and bias entries alone: only the paper spot has any
        assert ("spot_norms" in set(at.mask_kind)) == (configuration == "paper")
    # at another headline k, that k gets every control with its seeds
    plan = list(ablation_plan.mask_plan(params, model, {"paper": [1.0, 5.0], "global": [5.0]}))
    kinds = pd.DataFrame([lab for lab, _ in plan])
    paper = kinds[(kinds.configuration == "paper") & (kinds.k_percent == 1.0)]
    assert len(paper[paper.mask_kind == "random_uniform"]) == 2 and "magnitude" in set(paper.mask_kind)
    assert "code_minus_general" not in set(kinds[(kinds.configuration == "global") & (kinds.k_percent == 1.0)].mask_kind)
    # random_uniform spreads its entries over the configuration's scope: no 1-D tensor in the global one
    uniform = [m for lab, m in plan if lab["mask_kind"] == "random_uniform" and lab["configuration"] == "global"]
    assert all(m.ndim == 2 for masks in uniform for m in masks.values())


def test_empty_zero_ablation_leaves_every_metric_bit_identical(setup):
    model, tok, params, _, subsets = setup
    ev = build_evaluators(params, model, tok, subsets, None)
    empty = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in scoped_parameters(model).items()}
    labels = dict(model="m", k_percent=5.0, configuration="global", granularity="global", mask_kind="spot")
    rows, results, baseline = ablation_loop.ablate_and_evaluate(model, [(labels, empty)], ev, params)
    base = {(r["metric"], r["subset"]): r["value"] for r in rows if r["mask_kind"] == "baseline"}
    abl = {(r["metric"], r["subset"]): r["value"] for r in rows if r["mask_kind"] == "spot"}
    assert all(abl[key] == v for key, v in base.items())
    assert all(r["value"] == 0.0 for r in rows if r["metric"] == "loss_rise")
    assert results[1][1]["loss"].equals(baseline["loss"])


def test_sweep_rows_paired_tests_and_holm(setup):
    model, tok, params, scores, subsets = setup
    params = dict(params, k_grid=[5.0], configurations=["global"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ev = build_evaluators(params, model, tok, subsets, None)
    plan = list(ablation_plan.mask_plan(params, model))
    outliers = ablation_plan.outlier_masks(scores, params["outlier_counts"], "global")
    rows, results, baseline = ablation_loop.ablate_and_evaluate(model, plan + outliers, ev, params, vocab=10_000)
    rows += paired_tests.paired_rows(results, baseline, CODE, "english", 10_000, n_boot=100, matched_boot=200)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    df = pd.DataFrame(rows)
    assert set(df.columns) >= {"mask_kind", "metric", "subset", "value", "ci_low", "ci_high", "control_of"}
    # every mask gets code/general rises with intervals; every non-reference mask a test against random_uniform
    rises = df[df.metric == "code_rise"]
    assert (rises.ci_low <= rises.value + 1e-12).all() and (rises.value <= rises.ci_high + 1e-12).all()
    tested = df[df.metric == "p_wilcoxon_loss"]  # 6 items per subset: enough for a signed-rank test
    assert set(tested.mask_kind) == {"spot", "random", "magnitude", "code_over_general", "code_minus_general"}
    assert (tested.control_of == "random_uniform").all() and tested.seed.isna().all()  # seeds pooled: one test
    matched = df[(df.metric == "matched_excess") & df.seed.isna()]
    assert {"spot", "random", "magnitude", "code_over_general", "code_minus_general", "top_entries"} \
        <= set(matched.mask_kind)
    assert set(df[(df.metric == "matched_excess") & df.seed.notna()].mask_kind) == {"random"}
    # random_uniform's own seeds go to the placebo check: each against the other seeds' curve, and the share called
    placebo = df[df.metric == "placebo_matched_excess"]
    assert set(placebo.mask_kind) == {"random_uniform"} and placebo.seed.notna().all()
    [rate] = df[df.metric == "placebo_false_positive_rate"].to_dict("records")
    p = df[df.metric == "p_placebo_matched_excess"].value
    assert rate["n"] == len(p) == placebo.value.notna().sum()  # a seed beyond the others' reach has no value
    if len(p):
        assert rate["value"] == pytest.approx((p < 0.05).mean())
        assert rate["ci_low"] <= rate["value"] <= rate["ci_high"]
    else:
        assert pd.isna(rate["value"]) and set(placebo.status) == {"outside_random_range"}
        assert rate["status"] == "no_seed_inside_the_others_curve"
    assert (matched.reference == "english").all() and (matched.configuration == "global").all()
    p = df[df.metric == "p_wilcoxon_loss"]
    adj = df[df.metric == "p_holm_wilcoxon_loss"]
    assert len(adj) == len(p) and (adj.value.to_numpy() >= p.value.to_numpy() - 1e-12).all()
    top = df[df.mask_kind == "top_entries"]
    assert set(top[top.metric == "n_selected"].value) == {1, 10}
    assert ev.timings()["loss"]["calls"] == len(plan) + len(outliers) + 1
    assert df[df.metric == "uniform_loss"].value.tolist() == [pytest.approx(np.log(10_000))]
    # the rise frame feeds the figure with error bars
    rf = ablation_tables.rise_frame(rows)
    assert set(rf.metric) == {"code_rise", "general_rise"} and (rf.ci_low <= rf.ci_high).all()


def test_wilcoxon_needs_six_items(setup):
    model, tok, params, _, subsets = setup
    params = dict(params, k_grid=[5.0], configurations=["global"])
    ev = build_evaluators(params, model, tok, {s: seqs[:5] for s, seqs in subsets.items()}, None)
    plan = [(lab, m) for lab, m in ablation_plan.mask_plan(params, model)
            if lab["mask_kind"] in ("spot", "random_uniform")]
    _, results, baseline = ablation_loop.ablate_and_evaluate(model, plan, ev, params)
    rows = paired_tests.paired_rows(results, baseline, CODE, "english", 10_000, n_boot=100, matched_boot=200)
    assert not [r for r in rows if r["metric"].startswith("p_wilcoxon")]


def test_holm_corrects_each_family_of_p_values_apart():
    rng = np.random.default_rng(0)
    subsets = CODE + ["english"]

    def frame(rise: dict):
        return pd.DataFrame([dict(subset=s, item=i, loss=2.0 * (1 + rise.get(s, 0.0)) + 0.01 * rng.random())
                             for s in subsets for i in range(8)])
    base = dict(k_percent=1.0, granularity="global", mode="zero")
    baseline = {"loss": frame({})}
    results = [(dict(mask_kind="baseline"), baseline),
               (dict(base, mask_kind="random_uniform", seed=0), {"loss": frame({s: 0.05 for s in subsets})}),
               (dict(base, mask_kind="spot"), {"loss": frame({**{s: 0.5 for s in CODE}, "english": 0.1})}),
               (dict(base, mask_kind="code_over_general"), {"loss": frame({**{s: 0.3 for s in CODE}, "english": 0.02})})]
    df = pd.DataFrame(paired_tests.paired_rows(results, baseline, CODE, "english", 10_000, n_boot=200, matched_boot=200))
    for family, size in [("selectivity_vs_reference", 2), ("wilcoxon_loss", 2 * len(subsets))]:
        raw, adj = df[df.metric == f"p_{family}"], df[df.metric == f"p_holm_{family}"]
        assert len(raw) == size
        assert adj[["mask_kind", "subset"]].to_numpy().tolist() == raw[["mask_kind", "subset"]].to_numpy().tolist()
        assert adj.value.to_numpy() == pytest.approx(stats.holm(raw.value.to_numpy()))
    # both selectivity tests reach 2/201 after correction: the family is 2 tests, not the run's 2 + 18
    assert (df[df.metric == "p_holm_selectivity_vs_reference"].value < 0.05).all()


def test_outlier_table_names_where_the_top_entries_sit():
    agg = {"a.weight": torch.tensor([[1.0, 9.0], [3.0, 2.0]]), "b.norm.weight": torch.tensor([10.0, 0.5])}
    table = ablation_tables.outlier_table(ablation_plan.outlier_masks(agg, [1, 3]))
    assert table[table.top_n == 1].param.tolist() == ["b.norm.weight"]
    three = table[table.top_n == 3].set_index("param").selected.to_dict()
    assert three == {"a.weight": 2, "b.norm.weight": 1}


def test_cross_ablation_rows(llama):
    from spot_utils import ablated
    from spot_utils.measure.evaluation import item_losses
    from spot_utils.analysis.rows import loss_rows
    model, tok = llama
    params = scoped_parameters(model)
    gen = torch.Generator().manual_seed(0)
    lang = {l: {n: torch.rand(p.shape, generator=gen) < 0.05 for n, p in params.items()} for l in CODE}
    subsets = {s: random_sequences(3, seed=i) for i, s in enumerate(CODE)}
    run = validate(dict(model="m", batch_size=4))
    ev = build_evaluators(run, model, tok, subsets, None, groups=["loss"])
    rows = ablation_loop.cross_ablation(model, lang, ev, run, dict(model="m", k_percent=1.0, granularity="global"))
    rises = pd.DataFrame([r for r in rows if r["metric"] == "loss_rise"])
    assert len(rises) == len(CODE) ** 2 and set(rises.mask_kind) == {f"specific:{l}" for l in CODE}
    assert (rises.value != 0).any()
    # the same rows as ablating each language's own entries minus the others' by hand, against a fresh baseline
    base = item_losses(model, subsets, 4)
    for l in CODE:
        region = {n: lang[l][n] & ~torch.stack([lang[o][n] for o in CODE if o != l]).any(0) for n in params}
        with ablated(model, region):
            ref = loss_rows(item_losses(model, subsets, 4), base, mask_kind=f"specific:{l}")
        got = rises[rises.mask_kind == f"specific:{l}"]
        assert got.value.tolist() == [r["value"] for r in ref if r["metric"] == "loss_rise"]
        assert rows[[r["mask_kind"] for r in rows].index(f"specific:{l}") + len(CODE)]["value"] == mask_count(region)


def test_batched_greedy_generation_equals_a_plain_argmax_loop(llama):
    model, tok = llama
    prompts = ["def f(x):\n", "a longer prompt here"]
    got = generate_greedy(model, tok, prompts, stop=("\n\n\n\n\n\n",), max_new_tokens=6, batch_size=2)
    for prompt, text in zip(prompts, got):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            for _ in range(6):  # no KV cache, one sequence at a time
                nxt = model(input_ids=ids, use_cache=False).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], 1)
                if int(nxt) == tok.eos_token_id:
                    break
        expected = tok.decode(ids[0, len(tok(prompt).input_ids):], skip_special_tokens=True)
        assert text == truncate_at_stop(expected, ("\n\n\n\n\n\n",))
    assert model.config.use_cache is False  # generation switches the cache on for its own call only


def test_gsm8k_answer_extraction():
    from spot_utils.measure.evaluation import gsm8k_answer
    assert gsm8k_answer(" 3 + 4 = 7 eggs, 7 * 2 = 14. So the answer is $1,400.") == "1400"
    assert gsm8k_answer(" So the answer is 18.") == "18" and gsm8k_answer("x = 2.50 then 3") == "3"
    assert gsm8k_answer("the answer is 2.50") == "2.5" and gsm8k_answer("no number") is None


def test_truncate_at_stop():
    assert truncate_at_stop("    return 1\ndef g():\n", ("\ndef", "\nclass")) == "    return 1"
    assert truncate_at_stop("x", ("\ndef",)) == "x"


@pytest.mark.slow
def test_full_params_run_end_to_end_on_a_small_subsample(tmp_path):
    """params/full.yaml's structure (both granularities, every control at every k, every ablation mode, outliers,
    cross-ablation, likelihood, multiple choice, executed pass@1) on a tiny model, fixture corpus and stand-in
    evaluation archives; only model, corpus and sizes are overridden."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from evalset_fixtures import fixture_wheels

    pytest.importorskip("spot_utils.data.corpus")
    root = Path(__file__).resolve().parents[2]
    params = yaml.safe_load((root / "params" / "full.yaml").read_text())
    params.update(run_name="full_small", model="random:llama", corpus_source="tests/fixtures/corpus",
                  n_score_sequences=4, max_len=64, n_eval_sequences=2, eval_max_len=64,
                  k_grid=params["k_grid"][-3:], likelihood_items=2, likelihood_max_len=64, mc_items=2,
                  generation_items=1, mbpp_items=1, generation_max_new_tokens=8, gsm8k_items=1, cross_ablation_sequences=1, bootstrap_samples=100)
    path = tmp_path / "full_small.yaml"
    path.write_text(yaml.safe_dump(params))
    fixture_wheels(tmp_path / "data")
    env = dict(os.environ, SPOT_RUNS_DIR=str(tmp_path / "runs"), SPOT_REPORTS_DIR=str(tmp_path / "reports"),
               SPOT_DATA_DIR=str(tmp_path / "data"), MPLBACKEND="Agg", PYTHONPATH=str(root))
    proc = subprocess.run([sys.executable, "-m", "spot_utils.pipeline", str(path), "--stages", "01_scoring",
                           "02_aggregation", "03_selection", "04_ablation"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = pd.DataFrame(json.loads((tmp_path / "reports" / "full_small" / "metrics.json").read_text()))
    assert set(rows.granularity.dropna()) == {"global", "per_tensor"}
    assert {"spot", "random", "random_uniform", "magnitude", "code_over_general", "code_minus_general",
            "top_entries"} <= set(rows.mask_kind)
    assert any(k.startswith("specific:") for k in rows.mask_kind)
    assert {"zero", "mean", "noise"} <= set(rows["mode"].dropna())
    assert {"loss", "perplexity", "accuracy", "loss_rise", "acc", "acc_norm", "pass@1", "exact_match", "code_rise",
            "general_rise"} <= set(rows.metric)
    assert {"humaneval", "mbpp", "mbpp_go", "arc_easy", "mmlu", "gsm8k"} <= set(rows.subset)
    for k in params["k_grid"]:  # every control at every k
        assert {"random", "magnitude", "code_minus_general"} <= set(rows[rows.k_percent == k].mask_kind)


def test_headline_and_finding_read_the_rows():
    lab = dict(k_percent=1.0, granularity="global", mode="zero")
    rows = []
    for kind, code, gen in (("spot", 0.5, 0.1), ("random_uniform", 0.2, 0.1)):
        rows += [dict(lab, mask_kind=kind, metric="code_rise", subset="code", value=code, ci_low=code - 0.1, ci_high=code + 0.1),
                 dict(lab, mask_kind=kind, metric="code_rise", subset="code:unseen", value=9.0, ci_low=8.0, ci_high=10.0),
                 dict(lab, mask_kind=kind, metric="general_rise", subset="english", value=gen, ci_low=gen, ci_high=gen),
                 dict(lab, mask_kind=kind, metric="selectivity", subset="code/english", value=code / gen)]
    rows += [dict(lab, mask_kind="spot", metric="selectivity_minus_reference", subset="code/english", value=3.0,
                  ci_low=1.0, ci_high=5.0, control_of="random_uniform"),
             dict(lab, mask_kind="spot", metric="p_holm_selectivity_vs_reference", subset="code/english", value=0.01)]
    table = ablation_tables.rise_table(rows, 1.0, "global", "english")
    assert table.loc["spot", "code_rise"] == "0.500 [0.400, 0.600]"
    assert table.loc["spot", "code_rise unseen"] == "9.000 [8.000, 10.000]"
    assert table.loc["spot", "p_holm vs random_uniform"] == "0.01" and table.loc["random_uniform", "selectivity"] == "2.000"
    text = ablation_tables.finding(rows, 1.0, "global", "english")
    assert "+50.0%" in text and "+20.0%" in text and "more coding-specific than random damage" in text
