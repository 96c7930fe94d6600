import math

import pytest
import torch

from spot_utils import aggregate, code_minus_general, code_over_general, select_top_k


def sort_reference(scores, k, granularity):
    """Selection by a full sort on (value desc, name asc, flat index asc)."""
    def pick(entries, m):
        return sorted(entries)[:m]
    out = {n: torch.zeros(s.numel(), dtype=torch.bool) for n, s in scores.items()}
    if granularity == "per_tensor":
        for n, s in scores.items():
            for _, _, i in pick([(-v, n, i) for i, v in enumerate(s.flatten().tolist())], math.floor(k / 100 * s.numel())):
                out[n][i] = True
    else:
        entries = [(-v, n, i) for n, s in scores.items() for i, v in enumerate(s.flatten().tolist())]
        for _, n, i in pick(entries, math.floor(k / 100 * len(entries))):
            out[n][i] = True
    return {n: out[n].view(s.shape) for n, s in scores.items()}


@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
@pytest.mark.parametrize("seed", range(6))
def test_selection_equals_a_sort_with_heavy_ties(granularity, seed):
    gen = torch.Generator().manual_seed(seed)
    scale = [1.0, 1e-30, 3e20][seed % 3]  # ordinary, subnormal-adjacent and huge magnitudes
    scores = {f"layers.{i}.w": torch.randint(0, 4, (6, 7), generator=gen).float() * scale for i in range(3)}
    scores["layers.0.norm"] = torch.rand(9, generator=gen)
    scores["a.bias"] = torch.zeros(5)
    for k in (0.5, 3, 10, 37.5, 50, 99.9):
        ref = sort_reference(scores, k, granularity)
        if not any(m.any() for m in ref.values()):  # k rounds to no entry: an error, not an empty mask
            with pytest.raises(ValueError, match="selects no entry"):
                select_top_k(scores, k, granularity)
            continue
        got = select_top_k(scores, k, granularity)
        for n in scores:
            assert torch.equal(got[n], ref[n]), (k, n)


def test_global_count_is_exact_and_negative_values_rank_low():
    scores = {"b": torch.tensor([-1.0, 0.0, -0.0, 2.0]), "a": torch.tensor([0.0, -3.0])}
    masks = select_top_k(scores, 50)
    assert sum(int(m.sum()) for m in masks.values()) == 3
    # 2.0, then the three zeros tie: names ascending ('a' first), then flat index -> a[0], b[1]
    assert masks["b"].tolist() == [False, True, False, True]
    assert masks["a"].tolist() == [True, False]


@pytest.mark.parametrize("k", [0, 100, -1, 150, float("nan")])
def test_k_outside_range_is_rejected(k):
    with pytest.raises(ValueError, match="k_percent"):
        select_top_k({"w": torch.rand(10)}, k)


def test_nan_scores_are_rejected_with_the_tensor_name():
    with pytest.raises(ValueError, match="'w'"):
        select_top_k({"w": torch.tensor([1.0, float("nan")])}, 50)


def test_aggregations_on_a_hand_case():
    s = {"go": {"w": torch.tensor([1.0, -2.0, 3.0])}, "rust": {"w": torch.tensor([-4.0, 0.0, 1.0])}}
    assert aggregate(s)["w"].tolist() == [5.0, 2.0, 4.0]
    assert aggregate(s, "min")["w"].tolist() == [1.0, 0.0, 1.0]
    assert aggregate(s, "max")["w"].tolist() == [4.0, 2.0, 3.0]
    torch.testing.assert_close(aggregate(s, "normalized_sum")["w"], torch.tensor([1 / 6 + 4 / 5, 2 / 6, 3 / 6 + 1 / 5]))
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate(s, "mean")


def test_contrastive_regions_use_matrices_only():
    A = {"w": torch.tensor([[5.0, 4.0], [3.0, 1.0]]), "norm": torch.tensor([100.0, 100.0])}
    G = {"w": torch.tensor([[5.0, 0.0], [0.0, 0.0]]), "norm": torch.tensor([1.0, 1.0])}
    cmg = code_minus_general(A, G, 50)  # top-2 of A {5, 4} minus top-2 of G {5, then tie by index: 0 at (0,1)}
    assert set(cmg) == {"w"} and cmg["w"].tolist() == [[False, False], [False, False]]
    cog = code_over_general(A, G, 50)  # A / (G + eps): 4/eps and 3/eps are largest
    assert cog["w"].tolist() == [[False, True], [True, False]]
