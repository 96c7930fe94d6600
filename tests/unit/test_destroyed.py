"""The one destroyed rule: a mean loss at or above ln |V| (inclusive), any read subset destroying the point."""
import math

import numpy as np
import pytest

from spot_utils.analysis.destroyed import any_destroyed, loss_destroyed, uniform_loss

V = 1000


def test_the_threshold_is_ln_v_and_inclusive():
    assert uniform_loss(V) == math.log(V)
    assert loss_destroyed(math.log(V), V)
    assert not loss_destroyed(np.nextafter(math.log(V), 0), V)
    assert loss_destroyed(50.0, V) and not loss_destroyed(0.0, V)


def test_a_point_is_destroyed_when_the_mean_of_any_read_subset_is():
    rng = np.random.default_rng(0)
    losses = {s: rng.uniform(1, 3, 5) for s in ("go", "rust", "english")}
    # a subset whose items straddle ln |V| counts by its mean, not by its worst item
    losses["rust"] = np.array([math.log(V) + 2, math.log(V) - 3])
    naive = lambda subsets: any(sum(losses[s]) / len(losses[s]) >= math.log(V) for s in subsets)
    for subsets in (["go"], ["go", "rust"], ["english"], []):
        assert any_destroyed(losses, subsets, V) == naive(subsets)
    losses["english"] = np.full(4, math.log(V))
    assert any_destroyed(losses, ["go", "english"], V) and naive(["go", "english"])


# ------------------------------------------------------------------------------------------ the median rule

from spot_utils.analysis.destroyed import (CODE_COLLAPSE, DESTROYED, RULES, capped, code_destroyed, code_loss,  # noqa: E402
                                           loss_ratio, point_destroyed, point_status)

LN = math.log(V)
CODE12 = [f"lang{i}" for i in range(12)]


def _point(code_ratios, english_ratio, n=6, seed=0):
    """Hand-made item losses: each code subset's items scattered around its mean ratio · ln |V|, exactly."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, r in [*zip(CODE12, code_ratios), ("english", english_ratio)]:
        noise = rng.normal(0, 0.3, n)
        out[s] = r * LN + noise - noise.mean()
    return out


def test_one_subset_past_ln_v_destroys_under_any_but_not_under_the_median():
    # Gemma's global top-100: bash at 1.02 · ln |V|, the median code loss 0.67 · ln |V|, English well below
    ratios = [1.02] + [0.60, 0.62, 0.64, 0.66, 0.67, 0.67, 0.67, 0.70, 0.72, 0.74, 0.76]
    p = _point(ratios, 0.5)
    assert code_loss(p, CODE12) == pytest.approx(0.67 * LN)
    assert code_loss(p, CODE12, "any") == pytest.approx(1.02 * LN)
    assert not code_destroyed(p, CODE12, V) and code_destroyed(p, CODE12, V, "any")
    assert point_status(p, CODE12, "english", V) is None
    assert point_status(p, CODE12, "english", V, rule="any") == CODE_COLLAPSE
    assert not point_destroyed(p, CODE12, ["english"], V) and point_destroyed(p, CODE12, ["english"], V, "any")


def test_code_destroyed_with_english_intact_is_a_collapse_not_destroyed():
    # SmolLM2's code_minus_general: 10 of 12 code subsets at or past ln |V|, English at 0.7 · ln |V|
    p = _point([1.0, 1.05, 1.1, 1.2, 1.3, 1.0, 1.4, 1.5, 1.1, 1.2, 0.5, 0.6], 0.7)
    assert code_destroyed(p, CODE12, V)
    for rule in RULES:
        assert point_status(p, CODE12, "english", V, rule) == CODE_COLLAPSE
    assert point_destroyed(p, CODE12, "english", V)
    assert loss_ratio(float(np.mean(p["english"])), V) == pytest.approx(0.7)
    # the reference destroyed: DESTROYED whatever code does
    gone = dict(p, english=p["english"] + 0.31 * LN)
    assert point_status(gone, CODE12, "english", V) == DESTROYED
    intact_code = _point([0.5] * 12, 1.0)
    assert point_status(intact_code, CODE12, ["english"], V) == DESTROYED
    # several references: destroyed when any is
    two = dict(p, prose=p["english"] + 0.31 * LN)
    assert point_status(two, CODE12, ["english", "prose"], V) == DESTROYED
    assert point_status(two, CODE12, ["english"], V) == CODE_COLLAPSE


def test_median_over_an_even_number_of_subsets_and_unknown_rules():
    p = _point([0.9, 1.0, 1.0, 1.2] + [0.5] * 8, 0.5)
    assert not code_destroyed(p, CODE12, V)  # median of 12: mean of the 6th and 7th, 0.5
    four = {s: p[s] for s in CODE12[:4]}
    assert code_loss(four, CODE12[:4]) == pytest.approx(1.0 * LN) and code_destroyed(four, CODE12[:4], V)
    with pytest.raises(ValueError, match="unknown destroyed rule"):
        code_destroyed(p, CODE12, V, "mean")
    with pytest.raises(ValueError, match="at least one"):
        code_loss(p, [])


def test_the_cap_scales_only_subsets_past_ln_v_to_exactly_ln_v():
    p = _point([1.02, 0.8, 2.0] + [0.5] * 9, 0.7)
    out = capped(p, [*CODE12, "english"], V)
    for s in [*CODE12, "english"]:
        mean = sum(p[s]) / len(p[s])
        naive = [x * LN / mean for x in p[s]] if mean > LN else list(p[s])
        assert out[s] == pytest.approx(naive)
        assert float(np.mean(out[s])) <= LN + 1e-9
    assert float(np.mean(out["lang0"])) == pytest.approx(LN) and float(np.mean(out["lang2"])) == pytest.approx(LN)
    assert out["lang1"] is not p["lang1"] and np.array_equal(out["lang1"], p["lang1"])  # a copy, unchanged
    assert np.mean(p["lang2"]) == pytest.approx(2.0 * LN)  # the input is not modified
    # only the named subsets are capped
    assert np.array_equal(capped(p, ["lang1"], V)["lang2"], p["lang2"])
