"""The matched excess carries the variance of the random masks: a simulation where mask variance dominates."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spot_utils.analysis import matched

CODE = [f"lang{i}" for i in range(4)]
V = 49152
KS = (0.5, 1.0, 2.0)        # random_uniform's grid around the compared point
SEEDS = 5                   # the flagship's seed count at the k values bracketing a compared point
SLOPE, MASK_SD, ITEM_SD = 1.4, 0.05, 0.004   # ln(1 + c) = SLOPE · ln(1 + g) + mask effect; item noise small


def simulated_set(rng, excess: float):
    """Baseline item losses, random_uniform's seeds per k and one mask with a known excess over the expected
    random curve; every mask (each seed, and the compared one) draws its own effect on code (sd MASK_SD)."""
    base = {s: rng.uniform(1.0, 3.0, 12) for s in [*CODE, "english"]}

    def ablated(x, y):
        frame = {s: base[s] * math.exp(y) * np.exp(rng.normal(0, ITEM_SD, 12)) for s in CODE}
        frame["english"] = base["english"] * math.exp(x) * np.exp(rng.normal(0, ITEM_SD, 12))
        return frame

    random = {k: [ablated(0.1 * k, SLOPE * 0.1 * k + rng.normal(0, MASK_SD)) for _ in range(SEEDS)] for k in KS}
    mask = ablated(0.13, SLOPE * 0.13 + excess + rng.normal(0, MASK_SD))
    return base, random, mask


def coverage(n_sets: int, seed_variance: bool, excess: float = 0.05) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for i in range(n_sets):
        base, random, mask = simulated_set(rng, excess)
        [r] = matched.matched_excess(base, {"m": mask}, random, CODE, "english", V, n_boot=200, seed=i,
                                     seed_variance=seed_variance)
        # the known value is the excess over the random curve's expectation, which is SLOPE · x in these
        # coordinates (item noise adds a negligible bias at ITEM_SD)
        hits += r["ci_low"] <= excess <= r["ci_high"]
    return hits / n_sets


def test_the_interval_with_the_seed_component_covers_the_known_excess():
    assert 0.90 <= coverage(400, seed_variance=True) <= 0.97


def test_the_items_only_interval_under_covers_when_mask_variance_dominates():
    assert coverage(400, seed_variance=False) < 0.6


def test_placebo_rate_is_near_alpha_with_the_seed_component_and_far_above_without():
    rng = np.random.default_rng(7)
    called = {True: 0, False: 0}
    n = {True: 0, False: 0}
    for i in range(30):
        base, random, _ = simulated_set(rng, 0.0)
        for with_seeds in (True, False):
            out = matched.placebo(base, random, CODE, "english", V, n_boot=100, seed=i, seed_variance=with_seeds)
            called[with_seeds] += out["called"]
            n[with_seeds] += out["n"]
            assert len(out["rows"]) == len(KS) * SEEDS  # a seed beyond the others' reach at the top k has no p
            assert out["n"] >= len(KS) * SEEDS - SEEDS and out["ci_low"] <= out["rate"] <= out["ci_high"]
    assert called[True] / n[True] <= 0.10
    assert called[False] / n[False] >= 0.5


def test_binomial_interval_matches_hand_values():
    assert matched.binomial_interval(0, 10) == pytest.approx((0.0, 0.3084971), abs=1e-6)
    assert matched.binomial_interval(5, 10) == pytest.approx((0.1870860, 0.8129140), abs=1e-6)
    assert matched.binomial_interval(0, 0) == (None, None)


def test_curve_share_reads_the_interpolation_weights():
    # points at ln(1 + g) = 0 (the origin, exact), ln 1.1 (5 seeds), ln 1.2 (2 seeds)
    g = [0.1, 0.2]
    assert matched.curve_share(0.1, g, [5, 2]) == pytest.approx(1 / 5)
    x0, x1 = math.log(1.1), math.log(1.2)
    t = (math.log(1.15) - x0) / (x1 - x0)
    assert matched.curve_share(0.15, g, [5, 2]) == pytest.approx((1 - t) ** 2 / 5 + t ** 2 / 2)
    t0 = math.log(1.05) / x0
    assert matched.curve_share(0.05, g, [5, 2]) == pytest.approx(t0 ** 2 / 5)
