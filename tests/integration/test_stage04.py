"""Stage 04 as a whole: destroyed points and the damage-matched comparison against ratio selectivity, conclusions
only where the general-text references agree, the sweep's headline k values and random_uniform's extension, and a
stage killed after some masks and rerun giving the same metrics as one uninterrupted run."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import random_sequences, write_stage03_masks
from spot_utils import scoped_parameters, select_top_k
from spot_utils.experiment import ablation_loop
from spot_utils.report import tables as ablation_tables
from spot_utils.analysis import paired_tests
from spot_utils.experiment.ablation_plan import next_extension_k
from spot_utils.measure.metric_groups import Evaluation, Evaluators, build_evaluators
from spot_utils.analysis.rows import to_frame
from spot_utils.experiment.params import validate

CODE = ["go", "rust", "python"]
REFS = ["english", "english_modern"]
VOCAB = 49_152  # ln |V| = 10.80, SmolLM2's


# ------------------------------------------------------------------------ synthetic rows of a destroyed model

def _frame(losses: dict[str, np.ndarray]) -> dict[str, pd.DataFrame]:
    return {"loss": pd.DataFrame([dict(subset=s, item=i, loss=float(v), accuracy=0.5, n_tokens=100)
                                  for s, values in losses.items() for i, v in enumerate(values)])}


def _synthetic_results(rng, destroyed: bool = False):
    """Baseline, random_uniform (3 seeds) along a damage curve ln(1 + c) = 1.5 ln(1 + g), on which the ratio c / g
    grows with damage, and the spot: at 1% a point ON that curve but further out (g = 1), at 5% a code collapse (code
    at 17 nats, above ln |V|, general text at 8 nats, below it) and, with `destroyed`, at 10% destroyed (general text
    at 12 nats too)."""
    base = {s: 2.0 * rng.uniform(0.9, 1.1, 12) for s in CODE} | {r: 4.0 * rng.uniform(0.9, 1.1, 12) for r in REFS}

    def scaled(code_rise, general_rise, noise=0.01):
        return {s: v * (1 + (code_rise if s in CODE else general_rise)) * rng.normal(1, noise, len(v))
                for s, v in base.items()}
    labels = dict(configuration="global", granularity="global", mode="zero")
    results = [(dict(mask_kind="baseline"), _frame(base))]
    for k, rise in ((1.0, 0.05), (5.0, 0.3), (10.0, 0.8), (20.0, 1.5)):
        for seed in (0, 1, 2):
            results.append((dict(labels, mask_kind="random_uniform", k_percent=k, seed=seed, n_entries=100),
                            _frame(scaled((1 + rise) ** 1.5 - 1, rise))))
    results.append((dict(labels, mask_kind="spot", k_percent=1.0, n_entries=100), _frame(scaled(2 ** 1.5 - 1, 1.0))))
    results.append((dict(labels, mask_kind="spot", k_percent=5.0, n_entries=500), _frame(scaled(7.5, 1.0))))
    if destroyed:
        results.append((dict(labels, mask_kind="spot", k_percent=10.0, n_entries=1000), _frame(scaled(7.5, 2.0))))
    return results


def test_a_destroyed_model_ratio_selectivity_claims_a_coding_region_matched_excess_does_not():
    results = _synthetic_results(np.random.default_rng(0), destroyed=True)
    baseline = results[0][1]
    code_subsets = CODE
    rows = paired_tests.paired_rows(results, baseline, code_subsets, REFS, VOCAB, n_boot=400, matched_boot=2000)
    df = to_frame(rows)
    spot = df[df.mask_kind == "spot"]
    # what ratio selectivity would say, computed as before destroyed points existed: a coding region at both k
    from spot_utils.analysis import stats
    by = {lab.get("k_percent"): ablation_loop.item_losses(f) for lab, f in results if lab["mask_kind"] == "spot"}
    uniform = {k: paired_tests.pooled_results([(lab, f) for lab, f in results if lab["mask_kind"] == "random_uniform"
                                               and lab["k_percent"] == k])[0][1] for k in (1.0, 5.0)}
    base = ablation_loop.item_losses(baseline)
    for k in (1.0, 5.0):
        old = stats.selectivity_vs_reference(by[k], ablation_loop.item_losses(uniform[k]), base, CODE, "english",
                                             n_boot=400)
        assert old["ci_low"] > 0 and old["p"] < 0.01, k  # "more coding-specific than random damage"
    # the collapsed point (code past ln |V|, general text not): no selectivity, no excess, status says why, and its
    # rises and losses as multiples of ln |V| reported; the destroyed one (general text past ln |V| too) likewise
    for k, status in ((5.0, "code_collapse"), (10.0, "destroyed")):
        at = spot[spot.k_percent == k]
        for metric in ("selectivity", "selectivity_minus_reference", "matched_excess", "matched_excess_any_subset"):
            got = at[at.metric == metric]
            assert len(got) == 2 and got.value.isna().all() and (got.status == status).all(), (k, metric)
        assert not [r for r in rows if r["mask_kind"] == "spot" and r["k_percent"] == k
                    and r["metric"] in ("p_selectivity_vs_reference", "p_matched_excess")]
        gen = at[at.metric == "general_rise"]
        assert (gen.status == status).all() and gen.value.notna().all() and gen.destroyed.eq(k == 10.0).all()
    at5 = spot[spot.k_percent == 5.0]
    ratio = at5[at5.metric == "loss_over_uniform"].set_index("subset").value
    assert ratio["code"] == pytest.approx(17 / math.log(VOCAB), rel=0.05) and (ratio[REFS] < 1).all()
    # the intact point lies on random damage's curve: ratio selectivity still claims, matched excess does not
    at1 = spot[spot.k_percent == 1.0]
    sel = at1[at1.metric == "selectivity_minus_reference"]
    assert (sel.ci_low > 0).all()
    me = at1[at1.metric == "matched_excess"].set_index("reference")
    assert (me.ci_low < 0).all() and (me.ci_high > 0).all() and (me.value.abs() < 0.05).all()
    p = at1[at1.metric == "p_holm_matched_excess"]
    assert len(p) == 2 and (p.value > 0.05).all()
    mde = at1[at1.metric == "mde_matched_excess"]
    assert len(mde) == 2 and (mde.value > 0).all()
    verdict = ablation_tables.conclusion(rows, "global", REFS)
    assert "is not distinguishable from random damage" in verdict and "agree" in verdict
    # the collapse is reported as the paper's claim, with its numbers, against each reference
    assert verdict.count("code collapses, general text intact at k = 5% (code +") == 2
    assert "median code loss 1.5" in verdict and "Under the any-subset rule the verdict is the same." in verdict
    # one p-value family per metric over the run: every matched-excess p of the run adjusted together
    raw = df[df.metric == "p_matched_excess"]
    adjusted = df[df.metric == "p_holm_matched_excess"]
    assert adjusted.value.to_numpy() == pytest.approx(stats.holm(raw.value.to_numpy()))
    # the figure's frame marks the collapsed and the destroyed point and keeps the random curve's seeds apart
    points = ablation_tables.damage_frame(rows, "global", "english").set_index(["mask_kind", "point"])
    assert points.loc[("spot", "k = 10%"), "destroyed"] and not points.loc[("spot", "k = 5%"), "destroyed"]
    assert points.loc[("spot", "k = 5%"), "collapse"] and not points.loc[("spot", "k = 1%"), "collapse"]
    assert points.loc[("spot", "k = 1%"), "kept"] and not points.loc[("spot", "k = 1%"), "destroyed"]
    hits = ablation_tables.code_only_collapses(rows, "english")
    assert list(zip(hits.mask_kind, hits.k_percent)) == [("spot", 5.0)] and hits.code_loss.iloc[0] > 1
    assert points.loc[("random_uniform", "k = 1%"), "seeds"] == 3


def test_conclusions_are_stated_only_where_the_references_agree():
    def rows_for(signs):
        rows = []
        for ref, (value, p) in signs.items():
            where = dict(configuration="global", mask_kind="spot", k_percent=1.0, reference=ref, subset=f"code/{ref}")
            rows += [dict(where, metric="matched_excess", value=value, ci_low=value - 0.1, ci_high=value + 0.1),
                     dict(where, metric="p_holm_matched_excess", value=p)]
        return rows
    agree = ablation_tables.conclusion(rows_for({"english": (0.4, 0.001), "english_modern": (0.3, 0.01)}), "global", REFS)
    assert "hurts code more than random damage" in agree and "disagree" not in agree
    assert "damage-matched at its point k = 1%" in agree  # the points a verdict rests on
    disagree = ablation_tables.conclusion(rows_for({"english": (0.4, 0.001), "english_modern": (-0.3, 0.01)}),
                                          "global", REFS)
    assert "disagree" in disagree and "no conclusion" in disagree
    assert "literary English it hurts code more" in disagree and "modern English prose it hurts code less" in disagree
    weak = ablation_tables.conclusion(rows_for({"english": (0.4, 0.001), "english_modern": (0.3, 0.2)}), "global", REFS)
    assert "disagree" in weak


def test_a_mask_without_a_comparable_point_says_why():
    def rows_for(statuses):
        return [dict(configuration="global", mask_kind="spot", k_percent=k, reference=ref, subset=f"code/{ref}",
                     metric="matched_excess", value=None, status=why) for k, why in statuses.items() for ref in REFS]
    said = ablation_tables.conclusion(rows_for({0.01: "destroyed", 1.0: "destroyed"}), "global", REFS)
    assert "no point comparable" in said and "both of its points are destroyed" in said
    said = ablation_tables.conclusion(rows_for({0.01: "outside_random_range", 0.1: "destroyed", 1.0: "destroyed"}),
                                      "global", REFS)
    assert "2 are destroyed" in said and "1 is beyond random_uniform's reach" in said


# ------------------------------------------------------------------------ the sweep on a tiny model

def _kind(name: str) -> str:
    return "attn" if "attn" in name else "mlp" if "mlp" in name else "norm"


def damage_evaluator(model, n_items=6):
    """A loss group whose item losses follow the share of zeroed entries of each module type: attention damage hurts
    the general text most, MLP damage code; 1-D (norm) damage hurts everything. Deterministic per model state."""
    params = scoped_parameters(model)
    bases = {s: (1.5 if s in CODE else 2.0) * np.linspace(0.9, 1.1, n_items) for s in CODE + REFS}

    def run():
        zero = {t: 0 for t in ("attn", "mlp", "norm")}
        size = dict(zero)
        for n, p in params.items():
            zero[_kind(n)] += int((p == 0).sum())
            size[_kind(n)] += p.numel()
        z = {t: zero[t] / size[t] for t in zero}
        rows = []
        for s, base in bases.items():
            code = s in CODE
            factor = 1 + (10 if code else 2) * z["mlp"] + (2 if code else 10) * z["attn"] + 20 * z["norm"]
            rows += [dict(subset=s, item=i, loss=float(b * factor), accuracy=0.5, n_tokens=64) for i, b in enumerate(base)]
        return pd.DataFrame(rows)
    return Evaluators({"loss": Evaluation(run, {s: n_items for s in bases})})


@pytest.fixture
def run(llama, tmp_path, monkeypatch):
    """A tiny model with the stage 03 masks of both configurations on disk; the spot favours attention."""
    import spot_utils.base.run_files as runs
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    model, tok = llama
    params = validate(dict(run_name="t", model="random:llama", k_grid=[1.0, 2.0], k_detail=2.0,
                           random_extension_k=[5.0, 10.0, 20.0, 50.0], outlier_counts=[1, 100],
                           general_eval=REFS, bootstrap_samples=100, matched_bootstrap_samples=300,
                           authors_spot_k=[2.0]))
    scoped = scoped_parameters(model)
    A = {n: p.detach().abs() * (100.0 if _kind(n) == "attn" else 1.0) for n, p in scoped.items()}
    write_stage03_masks(params, A, model)
    return model, tok, params, A


def test_the_sweep_picks_headline_k_and_extends_random_uniform_until_it_covers(run):
    model, _, params, A = run
    ev = damage_evaluator(model)
    rows, results, baseline, info = ablation_loop.sweep(model, params, ev, A, CODE)
    df = to_frame(rows)
    vocab = ablation_loop.vocab_size(model)
    for configuration, got in info.items():
        mine = df[(df.configuration == configuration) & (df["mode"] == "zero")]
        loss = mine[mine.metric == "loss"]

        def gone(g):  # the median rule, computed apart: median code loss or any reference at or above ln |V|
            by = g.groupby(["seed", "subset"], dropna=False).value.mean().unstack()
            return bool(((by[CODE].median(axis=1) >= math.log(vocab)) | (by[REFS] >= math.log(vocab)).any(axis=1)).any())
        spot_loss = loss[loss.mask_kind == "spot"]
        intact = sorted(k for k, g in spot_loss.groupby("k_percent") if not gone(g))
        assert got["smallest_intact_k"] == (intact[0] if intact else None)
        assert got["headline_ks"] == sorted({params["k_detail"], *intact[:1]})
        # three random_uniform seeds at the headline k values and at the curve's k values that bracket a compared
        # point, one elsewhere
        uniform = mine[(mine.mask_kind == "random_uniform") & (mine.metric == "n_selected")]
        seeds = uniform.groupby("k_percent").seed.nunique()
        brackets = set(got["random_bracket_ks"])
        assert brackets and brackets <= set(seeds.index)
        assert all(seeds[k] == (3 if k in got["headline_ks"] or k in brackets else 1) for k in seeds.index)
        # A ranks each tensor as |θ| does here: authors_spot (top-k |θ| minus top-k |A|) is empty, and not ablated
        assert not (mine.mask_kind == "authors_spot").any()
        # extended one k at a time, and no further than needed
        extended = got["random_extended_to"]
        assert extended == sorted(extended) and set(extended) <= set(params["random_extension_k"])
        # covered, or no k is left to extend to (the bracketing seeds can show a k destroyed that one seed was not)
        assert got["random_covers"] or next_extension_k(
            params, *ablation_loop.uniform_ks(results, configuration, CODE, REFS, vocab)) is None
        assert sorted(seeds.index) == sorted(params["k_grid"] + extended)
        # what the extension saw: the results before the bracketing seeds were added
        seen = [(lab, f) for lab, f in results if not (
            lab.get("configuration") == configuration and lab["mask_kind"] == "random_uniform"
            and lab["k_percent"] in brackets - set(got["headline_ks"]) and lab["seed"] != params["random_seeds"][0])]
        intact, destroyed = ablation_loop.uniform_ks(seen, configuration, CODE, REFS, vocab)
        losses = loss[(loss.mask_kind == "random_uniform")
                      & ((loss.seed == params["random_seeds"][0]) | loss.k_percent.isin(got["headline_ks"]))]
        assert destroyed == {k for k, g in losses.groupby("k_percent") if gone(g)}
        assert intact == set(losses.k_percent) - destroyed
        assert all(max(intact & set(params["k_grid"])) < k < min(destroyed, default=101) for k in extended)
        if got["random_extended_to"]:
            last = got["random_extended_to"][-1]
            before = [(lab, f) for lab, f in seen if not (lab.get("configuration") == configuration
                                                             and lab["mask_kind"] == "random_uniform"
                                                             and lab["k_percent"] == last)]
            assert not ablation_loop.random_covers(before, configuration, CODE, REFS, vocab)
    assert any(got["random_extended_to"] for got in info.values())  # the attention spot outruns random damage
    # every point then has a matched excess, none outside the random range
    rows += paired_tests.paired_rows(results, baseline, CODE, REFS, vocab, n_boot=100, matched_boot=300)
    me = to_frame(rows)
    me = me[(me.metric == "matched_excess") & me.seed.isna()]
    covered = [c for c, got in info.items() if got["random_covers"]]
    assert covered and not (me[me.configuration.isin(covered)].status == "outside_random_range").any()
    spot = me[(me.mask_kind == "spot") & me.value.notna()].set_index("configuration")
    assert (spot.loc["global"].value < -0.1).all()  # attention only: less code damage than random at equal general damage
    assert (spot.loc["paper"].value.abs() < 0.01).all()  # per tensor, the spot spreads like random per tensor


class KilledAfter(Evaluators):
    """Evaluators that raise after `calls` evaluations: a stage killed in the middle."""

    def __init__(self, inner: Evaluators, calls: int):
        super().__init__(inner.groups)
        self.left = calls

    def __call__(self, groups):
        if self.left == 0:
            raise KeyboardInterrupt("killed")
        self.left -= 1
        return super().__call__(groups)


def _stage04(model, params, ev, A, store):
    rows, results, baseline, info = ablation_loop.sweep(model, params, ev, A, CODE + ["c"], store)
    rows += paired_tests.paired_rows(results, baseline, CODE + ["c"], REFS, ablation_loop.vocab_size(model),
                                     n_boot=100, matched_boot=300)
    return json.loads(json.dumps(rows)), info


def test_stage_04_killed_after_some_masks_and_rerun_gives_the_same_metrics(run, monkeypatch, tmp_path):
    import spot_utils.base.run_files as runs
    model, tok, params, A = run
    subsets = {s: random_sequences(3, seed=i) for i, s in enumerate(CODE + ["c"] + REFS)}
    ev = build_evaluators(params, model, tok, subsets, None)
    store = ablation_loop.FrameStore(params)
    whole, info = _stage04(model, params, ev, A, store)
    # every mask measured has its time and the process's memory after it, for the stage's manifest
    assert set(store.costs) == set(store.written) and store.written
    assert all(c["seconds"] > 0 and c["peak_rss_mib"] > 0 for c in store.costs.values())
    n_entries = len(list((runs.run_dir(params) / "ablation").rglob("*.json")))
    other = dict(params, run_name="t2")
    for name in ("masks",):  # the same stage 03 outputs under another run name
        import shutil
        shutil.copytree(runs.run_dir(params) / name, runs.run_dir(other) / name)
    first = ablation_loop.FrameStore(other)
    with pytest.raises(KeyboardInterrupt):
        _stage04(model, other, KilledAfter(ev, 7), A, first)
    assert len(first.written) == 6  # the baseline, then six masks written before the kill
    second = ablation_loop.FrameStore(other)
    again, info_again = _stage04(model, other, ev, A, second)
    assert again == whole and info_again == info
    assert len(second.reused) == 6 and len(second.written) + len(second.copied) == n_entries - 1 - 6
    # a baseline that differs from the stored one is refused, naming the folder to delete
    other_items = build_evaluators(params, model, tok, {s: v[:2] for s, v in subsets.items()}, None)
    with pytest.raises(ValueError, match="baseline measured now differs"):
        _stage04(model, other, other_items, A, ablation_loop.FrameStore(other))


def test_a_mask_met_twice_is_measured_once_and_counted_once(run):
    model, tok, params, A = run
    subsets = {s: random_sequences(2, seed=i) for i, s in enumerate(CODE + REFS)}
    ev = build_evaluators(params, model, tok, subsets, None)
    spot = select_top_k(A, 0.1, granularity="global")
    entries = [(dict(configuration="global", mask_kind="spot", k_percent=0.1), spot),
               (dict(configuration="global", mask_kind="top_entries", k_percent=None), spot)]  # the same mask
    for sitting, measured in ((1, 1), (2, 0)):  # the second sitting reads the first's results
        store, calls = ablation_loop.FrameStore(params), KilledAfter(ev, 100)
        ablation_loop.ablate_and_evaluate(model, entries, calls, params, store=store)
        assert 100 - calls.left - 1 == measured == len(store.written), sitting  # one call is the baseline
        assert len(store.copied) == 1 and len(store.reused) == sitting - 1, sitting


def test_stored_results_are_read_back_bit_exactly(run):
    model, tok, params, A = run
    frames = {"loss": pd.DataFrame(dict(subset=["go", "go"], item=[0, 1], loss=[1 / 3, math.pi], accuracy=[0.1, 0.7],
                                        n_tokens=[3, 64]))}
    store = ablation_loop.FrameStore(params)
    store.put("global/spot/k1", "d", {}, frames)
    got = store.get("global/spot/k1", "d", ["loss"])
    assert got["loss"].equals(frames["loss"])
    assert store.get("global/spot/k1", "other mask", ["loss"]) is None  # a changed mask is measured again
    assert store.get("global/spot/k1", "d", ["loss", "mc"]) is None  # so is an entry that lacks a metric group


def test_random_uniform_extends_only_where_its_curve_can_reach_further():
    params = validate(dict(run_name="t", model="random:llama", random_extension_k=[20.0, 2.0, 5.0, 3.0]))
    assert next_extension_k(params, {0.1, 1.0, 5.0}, set()) == 20.0  # above the grid
    assert next_extension_k(params, {0.1, 1.0}, {5.0}) == 2.0  # destroyed at the grid's top: in between
    assert next_extension_k(params, {0.1, 1.0, 2.0, 3.0}, {5.0, 20.0}) is None  # nothing left between 3 and 5
    assert next_extension_k(params, set(), {0.1}) is None
