"""The one destroyed rule: a mean loss at or above ln |V| (inclusive), any read subset destroying the point."""
import math

import numpy as np

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
