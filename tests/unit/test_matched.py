"""Damage-matched comparison: destroyed points, known answers on synthetic curves, the two-stage bootstrap."""
from __future__ import annotations

import math

import numpy as np
import scipy.stats
import pytest

from spot_utils.analysis import matched
from spot_utils.analysis.destroyed import any_destroyed

from spot_utils.analysis import stats
CODE = [f"lang{i}" for i in range(12)]
V = 49152  # ln |V| = 10.80


def _frame(base: dict, x: float, y: float) -> dict:
    """Item losses whose general rise is e^x − 1 and every code subset's rise e^y − 1 (so ln(1+g)=x, ln(1+c)=y)."""
    return {s: v * (math.exp(x) if s == "english" else math.exp(y)) for s, v in base.items()}


@pytest.fixture
def base():
    rng = np.random.default_rng(0)
    out = {s: rng.uniform(1.5, 2.5, 8) for s in CODE}
    out["english"] = rng.uniform(2.5, 3.5, 8)
    return out


def test_destroyed_model_ratio_claims_a_region_matched_excess_does_not(base):
    spot = {s: v * 20 for s, v in base.items()}  # ~40 nats on code: destroyed
    spot["english"] = base["english"] * 14  # ~42 nats: destroyed too, smaller ratio
    random = {1.0: [_frame(base, 0.1, 0.1 + d) for d in (-0.01, 0.0, 0.01)]}
    code_s, gen_s = stats.rises(spot, base, CODE, "english")
    code_r, gen_r = stats.rises(matched.pool_seeds(random[1.0]), base, CODE, "english")
    assert stats.selectivity(code_s, gen_s) > 1.3 > stats.selectivity(code_r, gen_r)  # the ratio "finds" a spot
    [row] = matched.matched_excess(base, {("spot", 1.0): spot}, random, CODE, "english", V, n_boot=200)
    assert row["destroyed"] and row["status"] == "destroyed"
    assert row["value"] is None and row["p"] is None and row["p_holm"] is None
    assert any_destroyed(spot, [*CODE, "english"], V)
    one = dict(base, english=base["english"] * 0 + math.log(V))  # exactly ln|V| on the reference: destroyed
    assert any_destroyed(one, [*CODE, "english"], V)
    one = dict(base, lang3=base["lang3"] * 0 + math.log(V) - 1e-9)
    assert not any_destroyed(one, [*CODE, "english"], V)


def test_known_answers_inside_and_outside_the_random_range(base):
    # random curve through (0,0), (0.1,0.02), (0.2,0.1), (0.4,0.2); k=50 is destroyed and must not extend it
    random = {0.1: _frame(base, 0.1, 0.02), 1.0: _frame(base, 0.2, 0.1), 5.0: _frame(base, 0.4, 0.2),
              50.0: {s: v * 0 + 20.0 for s, v in base.items()}}
    masks = {"a": _frame(base, 0.15, 0.30), "b": _frame(base, 0.3, 0.1), "c": _frame(base, 0.05, 0.05),
             "d": _frame(base, 0.4, 0.25), "e": _frame(base, 0.41, 0.9), "f": _frame(base, -0.01, 0.1)}
    rows = {r["key"]: r for r in matched.matched_excess(base, masks, random, CODE, "english", V, n_boot=300)}
    expect = {"a": 0.30 - 0.06, "b": 0.1 - 0.15, "c": 0.05 - 0.01, "d": 0.25 - 0.2}
    for key, value in expect.items():
        r = rows[key]
        assert r["status"] is None and r["value"] == pytest.approx(value, abs=1e-12)
        # rises are identical across items and languages: every replicate gives the same answer
        assert r["ci_low"] == pytest.approx(value, abs=1e-9) and r["ci_high"] == pytest.approx(value, abs=1e-9)
        assert r["p"] == pytest.approx(2 / 301) and r["defined"] == 1.0
    for key in "ef":  # beyond the last non-destroyed random point / left of the origin: never extrapolated
        assert rows[key]["status"] == "outside_random_range" and rows[key]["value"] is None
    assert rows["a"]["code_rise"] == pytest.approx(math.exp(0.3) - 1)
    assert rows["a"]["general_rise"] == pytest.approx(math.exp(0.15) - 1)
    assert [rows[k]["p_holm"] for k in "abcd"] == pytest.approx([8 / 301] * 4)  # Holm over one family of 4


def test_no_random_curve_and_inputs_checked(base):
    rows = matched.matched_excess(base, {"a": _frame(base, 0.1, 0.1)}, {1.0: {s: v * 10 for s, v in base.items()}},
                                  CODE, "english", V, n_boot=100)
    assert rows[0]["status"] == "no_random_curve"
    short = dict(base, lang0=base["lang0"][:5])
    with pytest.raises(ValueError, match="mask 'a'.*'lang0'.*8 items"):
        matched.matched_excess(base, {"a": short}, {1.0: base}, CODE, "english", V)
    with pytest.raises(ValueError, match="seed 1"):
        matched.pool_seeds([base, short])


def test_point_and_replicates_match_a_naive_reference():
    rng = np.random.default_rng(1)
    code = CODE[:5]
    base = {s: rng.uniform(1, 3, 6 + i) for i, s in enumerate(code)} | {"english": rng.uniform(2, 3, 7)}
    noisy = lambda f, sd: {s: v * np.exp(rng.normal(f, sd, len(v))) for s, v in base.items()}  # noqa: E731
    seeds = {k: [noisy(k / 10, 0.05) for _ in range(3)] for k in (1, 2, 4)}
    mask = noisy(0.25, 0.1)
    [row] = matched.matched_excess(base, {"m": mask}, seeds, code, "english", V, n_boot=50, seed=7,
                                   seed_variance=False)
    # naive point estimate: stats.rises on seed-pooled items, np.interp on the log curve
    pts = [stats.rises(matched.pool_seeds(seeds[k]), base, code, "english") for k in (1, 2, 4)]
    xs, ys = zip(*sorted([(0.0, 0.0)] + [(math.log1p(g), math.log1p(c)) for c, g in pts]))
    c, g = stats.rises(mask, base, code, "english")
    assert row["value"] == pytest.approx(math.log1p(c) - np.interp(math.log1p(g), xs, ys), abs=1e-12)
    # naive replicates: the same draws applied with plain loops
    draw = matched.Draw.two_stage([len(base[s]) for s in code], len(base["english"]), 50, np.random.default_rng(7))
    n_max = max(len(base[s]) for s in code)
    reps = []
    for b in range(50):
        def resampled(frame):
            out = {}
            for j, lang in enumerate(draw.lang[b]):
                n = len(base[code[lang]])
                out[f"slot{j}"] = frame[code[lang]][draw.flat[b, j, :n] - lang * n_max]
            out["english"] = frame["english"][draw.general[b]]
            return out
        slots = [f"slot{j}" for j in range(len(code))]
        rb = resampled(base)
        p = sorted([(0.0, 0.0)] + [(math.log1p(g), math.log1p(c)) for c, g in
                                   (stats.rises(resampled(matched.pool_seeds(seeds[k])), rb, slots, "english")
                                    for k in (1, 2, 4))])
        c, g = stats.rises(resampled(mask), rb, slots, "english")
        x = math.log1p(g)
        reps.append(math.log1p(c) - np.interp(x, *zip(*p)) if p[0][0] <= x <= p[-1][0] else np.nan)
    reps = np.array(reps)
    kept = reps[~np.isnan(reps)]
    assert row["defined"] == len(kept) / 50
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(stats._interval(kept, 0.95))
    assert row["p"] == stats.bootstrap_p(kept)
    assert row["se"] == pytest.approx(kept.std(ddof=1)) and row["mde"] == pytest.approx(2.8016 * row["se"], rel=1e-4)
    assert row["se_seed"] is None and row["df"] is None
    # with the seeds' scatter: s² from each seed point's residual around the curve of seed means, written out
    [both] = matched.matched_excess(base, {"m": mask}, seeds, code, "english", V, n_boot=50, seed=7)
    squares = 0.0
    for k in (1, 2, 4):
        for frame in seeds[k]:
            c_s, g_s = stats.rises(frame, base, code, "english")
            x = math.log1p(g_s)
            j = min(max(j for j in range(len(xs)) if xs[j] <= x), len(xs) - 2)  # its segment, extended at the end
            squares += (math.log1p(c_s) - (ys[j] + (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]) * (x - xs[j]))) ** 2
    s2 = squares / (3 * (3 - 1))
    c, g = stats.rises(mask, base, code, "english")
    i = max(j for j in range(len(xs) - 1) if xs[j] <= math.log1p(g))
    frac = (math.log1p(g) - xs[i]) / (xs[i + 1] - xs[i])
    w = ((1 - frac) ** 2 / 3 if i else 0.0) + frac ** 2 / 3  # the origin (i = 0) is exact
    se_seed = math.sqrt(s2 * (1 + w))
    se = math.sqrt(kept.std(ddof=1) ** 2 + se_seed ** 2)
    df = 6 * (se / se_seed) ** 4
    half = scipy.stats.t.ppf(0.975, df) * se
    assert both["value"] == pytest.approx(row["value"])
    assert (both["se_seed"], both["se"], both["df"]) == pytest.approx((se_seed, se, df))
    assert (both["ci_low"], both["ci_high"]) == pytest.approx((row["value"] - half, row["value"] + half))
    assert both["p"] == pytest.approx(2 * scipy.stats.t.sf(abs(row["value"]) / se, df))


def test_two_stage_bootstrap_interval_covers_the_mean():
    """400 data sets of 12 languages (language effects sd 1) × 8 items (sd 1) around a known mean of 0."""
    rng = np.random.default_rng(2024)
    covered = 0
    for i in range(400):
        values = [rng.normal(rng.normal(0, 1), 1, 8) for _ in range(12)]
        lo, hi = np.quantile(matched.two_stage_mean(values, n_boot=1000, seed=i), [0.025, 0.975])
        covered += lo <= 0 <= hi
    assert 0.90 <= covered / 400 <= 0.97


def test_minimal_detectable_effect_and_range_cover():
    assert matched.minimal_detectable_effect(1.0) == pytest.approx(1.95996 + 0.84162, abs=1e-4)
    assert matched.minimal_detectable_effect(0.5, alpha=0.01, power=0.9) == pytest.approx(0.5 * (2.5758 + 1.2816),
                                                                                            abs=1e-3)
    pts = lambda *xs: [dict(x=x, status=s) for x, s in xs]  # noqa: E731
    assert matched.random_range_covers(pts((0.2, None), (5.0, "destroyed")), pts((0.1, None), (0.3, None)))
    assert not matched.random_range_covers(pts((0.4, None)), pts((0.1, None), (9.0, "destroyed")))
    # a collapsed point is not kept either: it neither needs the curve's reach nor extends it
    assert matched.random_range_covers(pts((0.2, None), (5.0, "code_collapse")), pts((0.3, None)))
    assert not matched.random_range_covers(pts((0.4, None)), pts((0.1, None), (9.0, "code_collapse")))


def test_damage_points(base):
    pts = matched.damage_points({1.0: _frame(base, 0.2, 0.3), 50.0: {s: v * 10 for s, v in base.items()}}, base,
                                CODE, "english", V)
    assert pts[0]["x"] == pytest.approx(0.2) and pts[0]["y"] == pytest.approx(0.3) and not pts[0]["destroyed"]
    assert pts[0]["status"] is None and pts[1]["destroyed"] and pts[1]["status"] == "destroyed"


def _collapsed(base, n_gone: int, ratio: float = 1.1, english_rise: float = 0.1) -> dict:
    """n_gone code subsets at ratio · ln |V| (items scaled), the rest unchanged; English raised by english_rise."""
    out = {s: v.copy() for s, v in base.items()}
    for s in CODE[:n_gone]:
        out[s] = base[s] * ratio * math.log(V) / base[s].mean()
    out["english"] = base["english"] * (1 + english_rise)
    return out


def test_code_collapsing_with_general_intact_is_its_own_status_with_its_rises(base):
    random = {1.0: [_frame(base, 0.1, 0.1 + d) for d in (-0.01, 0.0, 0.01)], 5.0: _frame(base, 0.3, 0.3)}
    spot = _collapsed(base, 10)  # SmolLM2's code_minus_general: 10 of 12 code subsets past ln |V|, English intact
    rows = {r["key"]: r for r in matched.matched_excess(base, {"spot": spot}, random, CODE, "english", V, n_boot=200)}
    r = rows["spot"]
    assert r["status"] == "code_collapse" and not r["destroyed"]
    assert r["value"] is None and r["p"] is None and r["ci_low"] is None
    naive_code = np.mean([spot[s].mean() / base[s].mean() - 1 for s in CODE])  # as measured: not capped
    assert r["code_rise"] == pytest.approx(naive_code) and r["general_rise"] == pytest.approx(0.1)
    # the reference destroyed too: destroyed, not a collapse
    gone = dict(spot, english=base["english"] * 1.01 * math.log(V) / base["english"].mean())
    [r] = matched.matched_excess(base, {"gone": gone}, random, CODE, "english", V, n_boot=50)
    assert r["status"] == "destroyed" and r["destroyed"]
    [p] = matched.damage_points({"spot": spot}, base, CODE, "english", V)
    assert p["status"] == "code_collapse" and not p["destroyed"]


def test_one_subset_past_ln_v_is_kept_under_the_median_and_enters_capped(base):
    random = {1.0: [_frame(base, 0.1, 0.1 + d) for d in (-0.01, 0.0, 0.01)], 5.0: _frame(base, 0.5, 3.0)}
    bash = _collapsed(base, 1, ratio=3.0)  # one code subset at 3 · ln |V|
    [med] = matched.matched_excess(base, {"top": bash}, random, CODE, "english", V, n_boot=200)
    [old] = matched.matched_excess(base, {"top": bash}, random, CODE, "english", V, n_boot=200, rule="any")
    assert old["status"] == "code_collapse" and old["value"] is None
    assert med["status"] is None and med["value"] is not None
    ln_v = math.log(V)
    pooled_y = math.log(np.mean(np.exp([0.09, 0.1, 0.11])))  # the seeds' items averaged
    naive = np.mean([min(bash[s].mean(), ln_v) / base[s].mean() - 1 for s in CODE])  # the capped code rise
    assert med["code_rise"] == pytest.approx(naive)
    assert med["code_rise"] < np.mean([bash[s].mean() / base[s].mean() - 1 for s in CODE])
    assert med["value"] == pytest.approx(math.log1p(naive) - np.interp(math.log1p(0.1), [0, 0.1, 0.5],
                                                                                [0, pooled_y, 3.0]))
    [p] = matched.damage_points({"top": bash}, base, CODE, "english", V)
    assert p["status"] is None and p["code_rise"] == pytest.approx(naive)


def test_random_points_that_collapse_stay_out_of_the_curve_and_kept_ones_enter_capped(base):
    masks = {"a": _frame(base, 0.3, 0.3)}
    # k = 5 collapses (10 code subsets past ln |V|): the curve ends at k = 1, and mask a lies beyond it
    random = {1.0: _frame(base, 0.1, 0.1), 5.0: _collapsed(base, 10, english_rise=0.5)}
    [r] = matched.matched_excess(base, masks, random, CODE, "english", V, n_boot=50)
    assert r["status"] == "outside_random_range"
    # under the any rule a random point with one subset past ln |V| is left out too; under the median it is kept
    random = {1.0: _frame(base, 0.1, 0.1), 5.0: _collapsed(base, 1, ratio=2.0, english_rise=0.5)}
    [r] = matched.matched_excess(base, masks, random, CODE, "english", V, n_boot=50, rule="any")
    assert r["status"] == "outside_random_range"
    [r] = matched.matched_excess(base, masks, random, CODE, "english", V, n_boot=50)
    capped_c = np.mean([min(random[5.0][s].mean(), math.log(V)) / base[s].mean() - 1 for s in CODE])
    curve_y = np.interp(0.3, [0, 0.1, math.log1p(0.5)], [0, 0.1, math.log1p(capped_c)])
    assert r["status"] is None and r["value"] == pytest.approx(0.3 - curve_y)
