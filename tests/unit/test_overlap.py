import math

import numpy as np
import pytest
import torch
from scipy.stats import hypergeom

from spot_utils.base import run_files as runs
from spot_utils.method.masks import mask_and, mask_count, mask_or
from spot_utils.analysis.stats import holm
from spot_utils.analysis.overlap import (against, compare, membership_patterns, pairwise, per_tensor_null,
                                simulate_overlap, stability, uniform_null)
from spot_utils.experiment.scoring_stage import split_halves


def masks_from_positions(sizes, positions):
    out = {}
    for i, (n, pos) in enumerate(zip(sizes, positions)):
        m = torch.zeros(n, dtype=torch.bool)
        m[list(pos)] = True
        out[f"t{i}"] = m
    return out


def test_uniform_null_matches_a_hand_computed_hypergeometric():
    # N = 10 entries, |A| = 4, |B| = 5, overlap 3: P(X ≥ 3) = [C(4,3)C(6,2) + C(4,4)C(6,1)] / C(10,5) = 66/252
    expected, p = uniform_null(10, 4, 5, 3)
    assert expected == pytest.approx(2.0)
    assert p == pytest.approx(66 / 252)
    assert p == pytest.approx(hypergeom.sf(2, 10, 4, 5))
    assert uniform_null(10, 4, 5, 0)[1] == pytest.approx(1.0)


def test_per_tensor_null_exact_convolution_on_a_hand_case():
    # tensor 1: n=4, a=2, b=2 -> X1 ∈ {0,1,2} with 1/6, 4/6, 1/6; tensor 2: n=3, a=1, b=2 -> X2 ∈ {0,1} with 1/3, 2/3
    counts = np.array([[4, 2, 2], [3, 1, 2]])
    res = per_tensor_null(counts, observed=2)
    assert res["method"] == "exact"
    assert res["expected"] == pytest.approx(1 + 2 / 3)
    assert res["p"] == pytest.approx(1 / 18 + 1 / 9 + 4 / 9)  # P(2,0) + P(2,1) + P(1,1)
    assert per_tensor_null(counts, observed=3)["p"] == pytest.approx(1 / 9)
    assert per_tensor_null(counts, observed=4)["p"] == 0.0
    var = 2 * 2 * 2 * 2 / (16 * 3) + 1 * 2 * 2 * 1 / (9 * 2)  # Σ a b (n−a)(n−b) / (n² (n−1))
    assert res["sd"] == pytest.approx(math.sqrt(var))


def test_normal_approximation_is_close_to_the_exact_convolution():
    counts = np.array([[5000, 300, 400], [2000, 150, 100], [800, 60, 90], [10000, 20, 700]])
    exact = per_tensor_null(counts, observed=45)
    approx = per_tensor_null(counts, observed=45, exact_work_limit=0)
    assert exact["method"] == "exact" and approx["method"] == "normal"
    assert approx["expected"] == pytest.approx(exact["expected"])
    assert approx["p"] == pytest.approx(exact["p"], abs=0.02)


def test_per_tensor_null_matches_a_simulation_by_shuffling():
    # sets concentrated in the small tensors: the per-tensor null expects far more overlap than the uniform one
    gen = torch.Generator().manual_seed(0)
    sizes = [2000, 100, 40]
    a_counts, b_counts = [10, 50, 30], [20, 40, 25]
    b = masks_from_positions(sizes, [torch.randperm(n, generator=gen)[:c].tolist() for n, c in zip(sizes, b_counts)])
    sims = []
    for _ in range(3000):  # shuffle A within each tensor, count its overlap with B
        a = masks_from_positions(sizes, [torch.randperm(n, generator=gen)[:c].tolist() for n, c in zip(sizes, a_counts)])
        sims.append(mask_count(mask_and(a, b)))
    sims = np.array(sims)
    counts = np.array([[n, ca, cb] for n, ca, cb in zip(sizes, a_counts, b_counts)])
    observed = 45
    res = per_tensor_null(counts, observed)
    assert abs(sims.mean() - res["expected"]) < 4 * sims.std() / math.sqrt(len(sims))
    assert sims.std() == pytest.approx(res["sd"], rel=0.08)
    assert (sims >= observed).mean() == pytest.approx(res["p"], abs=0.03)
    draws = simulate_overlap(counts, 20000, "per_tensor", seed=1)  # the fast permutation check: same distribution
    assert abs(draws.mean() - res["expected"]) < 4 * draws.std() / math.sqrt(len(draws))
    n_total, size_a, size_b = sum(sizes), sum(a_counts), sum(b_counts)
    assert res["expected"] > 5 * uniform_null(n_total, size_a, size_b, 0)[0]
    uniform_draws = simulate_overlap(counts, 20000, "uniform", seed=1)
    assert uniform_draws.mean() == pytest.approx(size_a * size_b / n_total, rel=0.05)


def test_compare_and_pairwise_report_both_nulls_with_holm():
    gen = torch.Generator().manual_seed(1)
    base = torch.rand(50, 40, generator=gen)
    masks = {lang: {"w": (base + 0.3 * torch.rand(50, 40, generator=gen)) > 1.0, "n": torch.rand(30, generator=gen) > 0.5}
             for lang in ("go", "rust", "java")}
    df = pairwise(masks, n_permutations=200, seed=0)
    assert list(zip(df.a, df.b)) == [("go", "rust"), ("go", "java"), ("rust", "java")]
    for col in ("p_uniform", "p_per_tensor", "p_perm_uniform", "p_perm_per_tensor", "p_uniform_holm",
                "p_per_tensor_holm", "expected_per_tensor", "null_method"):
        assert col in df
    assert (df.p_uniform_holm >= df.p_uniform).all() and (df.p_per_tensor_holm >= df.p_per_tensor).all()
    # the languages share a common base score: overlap is far above chance under both nulls
    assert (df.obs_over_exp > 1.5).all() and (df.p_per_tensor < 1e-6).all()
    assert (df.p_perm_per_tensor == 1 / 201).all()
    r = compare(masks["go"], masks["go"])
    assert r["jaccard"] == 1.0 and r["intersection"] == r["size_a"]
    ref = against(masks, masks["go"], "go")
    assert ref.set_index("language").loc["go", "jaccard"] == 1.0 and set(ref.reference) == {"go"}


def test_holm_on_a_hand_case():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert list(holm([])) == []


def test_membership_patterns_on_a_hand_case():
    t = lambda *b: torch.tensor(b, dtype=torch.bool)
    masks = {"go": {"w": t(1, 1, 0, 0, 1), "b": t(1, 0)},
             "rust": {"w": t(1, 0, 1, 0, 1), "b": t(1, 0)},
             "java": {"w": t(1, 1, 0, 0, 0), "b": t(0, 1)}}
    df = membership_patterns(masks)
    got = {row.languages: row.count for row in df.itertuples()}
    assert got == {("go", "rust", "java"): 1, ("go", "java"): 1, ("go", "rust"): 2, ("rust",): 1, ("java",): 1}
    assert df["count"].sum() == mask_count(mask_or(mask_or(masks["go"], masks["rust"]), masks["java"]))
    assert df.iloc[0].languages == ("go", "rust") and df.iloc[0].degree == 2


def test_split_halves_are_disjoint_and_cover():
    seqs = [torch.tensor([i, i]) for i in range(7)]
    a, b = split_halves(seqs)
    assert len(a) == 4 and len(b) == 3 and [int(x[0]) for x in a + b] == list(range(7))


def test_stability_between_halves():
    gen = torch.Generator().manual_seed(0)
    signal = {lang: {"w": torch.randn(60, 50, generator=gen), "n": torch.randn(40, generator=gen)} for lang in ("go", "rust")}
    halves = {"half_a": signal, "half_b": {l: {n: s * 2.0 for n, s in d.items()} for l, d in signal.items()}}
    same = stability(lambda h, l: halves[h][l], ["go", "rust"], [1.0, 10.0])
    assert set(same.subset) == {"aggregate", "go", "rust"} and len(same) == 6
    assert (same.jaccard == 1.0).all()  # halves proportional: identical rankings
    noise = {"half_a": signal, "half_b": {l: {n: torch.randn(s.shape, generator=gen) for n, s in d.items()}
                                          for l, d in signal.items()}}
    indep = stability(lambda h, l: noise[h][l], ["go", "rust"], [10.0], per_language_k=[])
    assert list(indep.subset) == ["aggregate"]
    row = indep.iloc[0]
    assert row.jaccard < 3 * row.jaccard_chance and row.jaccard_chance == pytest.approx(0.1 / 1.9, rel=0.05)
    with pytest.raises(ValueError, match="unknown half"):
        runs.scores_path("x", "go", "half_c")
