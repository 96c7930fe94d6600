import math

import pytest
import torch

import spot_utils
from spot_utils.method.authors_spot import authors_spot_ties, threshold_ties


def naive_top(t: torch.Tensor, m: int) -> set[int]:
    """The m largest entries of a tensor by the tie order: value descending, then flat index ascending."""
    flat = t.reshape(-1).tolist()
    return set(sorted(range(len(flat)), key=lambda i: (-flat[i], i))[:m])


def naive_authors_spot(A, weights, k):
    """The authors' two steps, written out: top-k of |θ|, top-k of |A|, set difference, per tensor."""
    out = {}
    for name, a in A.items():
        m = math.floor(k / 100 * a.numel())
        keep = naive_top(weights[name].abs(), m) - naive_top(a.abs(), m)
        mask = torch.zeros(a.numel(), dtype=torch.bool)
        mask[sorted(keep)] = True
        out[name] = mask.reshape(a.shape)
    return out


def tied_tensors(seed: int):
    """Weights on a coarse grid (as after 4-bit quantisation: many ties, signed) and an aggregate with ties."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"layers.0.mlp.up_proj.weight": (24, 16), "layers.0.input_layernorm.weight": (16,),
              "layers.1.self_attn.q_proj.weight": (16, 16), "layers.10.mlp.down_proj.weight": (16, 24)}
    weights = {n: torch.randint(-7, 8, s, generator=g).float() * 0.125 for n, s in shapes.items()}
    A = {n: torch.randint(0, 5, s, generator=g).float() for n, s in shapes.items()}
    return A, weights


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [0.5, 1.0, 3.0, 5.0, 33.0])
def test_authors_spot_equals_the_naive_two_steps_with_ties(seed, k):
    A, weights = tied_tensors(seed)
    got = spot_utils.authors_spot(A, weights, k)
    want = naive_authors_spot(A, weights, k)
    assert set(got) == set(A)
    for name in A:
        assert got[name].dtype == torch.bool and got[name].shape == A[name].shape
        assert torch.equal(got[name], want[name]), name


def test_authors_spot_is_large_weights_the_aggregate_does_not_rank_high():
    w = {"t": torch.tensor([5.0, -4.0, 3.0, 0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.0])}
    A = {"t": torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])}
    # k = 30%: 3 entries each; top |θ| = {0, 1, 2}; top A = {0, 9, 1} (ties at 0 by flat index) -> {2}
    assert spot_utils.authors_spot(A, w, 30.0)["t"].nonzero().flatten().tolist() == [2]


def test_threshold_ties_counts_the_tie_group_and_how_much_of_it_is_taken():
    t = torch.tensor([3.0, 2.0, 2.0, 2.0, 1.0, 2.0])
    assert threshold_ties(t, 1) == (1, 1)  # 3.0 alone
    assert threshold_ties(t, 3) == (4, 2)  # four 2.0s, two of them taken
    assert threshold_ties(t, 0) == (0, 0)
    A = {"a": t.clone(), "b": torch.zeros(6)}
    w = {"a": torch.ones(6), "b": torch.arange(6.0)}
    ties = authors_spot_ties(A, w, 50.0)  # m = 3 per tensor
    assert ties == {"weights_tied": 6 + 1, "weights_taken": 3 + 1, "aggregate_tied": 4 + 6, "aggregate_taken": 2 + 3}


def test_authors_spot_names_a_missing_or_misshapen_tensor():
    A = {"x": torch.ones(4, 4)}
    with pytest.raises(KeyError, match="'x'"):
        spot_utils.authors_spot(A, {"y": torch.ones(4, 4)}, 1.0)
    with pytest.raises(ValueError, match=r"'x' has shape \(4, 2\)"):
        spot_utils.authors_spot(A, {"x": torch.ones(4, 2)}, 1.0)
    with pytest.raises(ValueError, match="k_percent"):
        spot_utils.authors_spot(A, {"x": torch.ones(4, 4)}, 0.0)
