import itertools

import numpy as np
import pytest
from scipy import stats as sps

from spot_utils.analysis import stats
def exact_bootstrap_quantiles(values, level=0.95):
    """Quantiles of the exact bootstrap distribution of the mean (all n^n resamples, equally likely)."""
    means = np.sort([np.mean(c) for c in itertools.product(values, repeat=len(values))])
    cdf = np.arange(1, len(means) + 1) / len(means)
    alpha = (1 - level) / 2
    return means[np.searchsorted(cdf, alpha)], means[np.searchsorted(cdf, 1 - alpha)], means, cdf


def test_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    values = [0.0, 1.0, 2.0, 10.0]
    lo_exact, hi_exact, means, cdf = exact_bootstrap_quantiles(values)
    # the exact quantiles sit well inside an atom, so a large Monte-Carlo bootstrap must land on them
    for q, target in ((0.025, lo_exact), (0.975, hi_exact)):
        at = means == target
        assert cdf[at].min() - at.mean() + 0.005 < q < cdf[at].max() - 0.005
    lo, hi = stats.bootstrap_ci(np.mean, values, n_boot=40000, seed=1)
    assert (lo, hi) == (lo_exact, hi_exact)
    assert stats.mean_ci(values, n_boot=40000, seed=1) == (lo, hi)


def test_bootstrap_interval_equals_a_direct_loop_with_the_same_indices():
    a, b = np.array([1.0, 2.0, 4.0, 3.0, 7.0]), np.array([1.0, 1.0, 2.0, 2.0, 3.0])
    idx = np.random.default_rng(3).integers(0, 5, size=(500, 5))
    direct = [a[i].mean() / b[i].mean() - 1 for i in idx]
    expected = (np.quantile(direct, 0.025), np.quantile(direct, 0.975))
    got = stats.bootstrap_ci(lambda x, y: x.mean() / y.mean() - 1, a, b, n_boot=500, seed=3)
    got_vec = stats.bootstrap_ci(lambda x, y: x.mean(-1) / y.mean(-1) - 1, a, b, n_boot=500, seed=3, vectorized=True)
    assert np.allclose(got, expected) and np.allclose(got_vec, expected)


def test_wilcoxon_matches_scipy_and_detects_a_shift():
    rng = np.random.default_rng(0)
    b = rng.normal(size=40)
    a = b + 0.5 + rng.normal(scale=0.1, size=40)
    assert stats.wilcoxon_p(a, b) == pytest.approx(sps.wilcoxon(a - b).pvalue)
    assert stats.wilcoxon_p(a, b) < 1e-6
    assert stats.wilcoxon_p(b, b) == 1.0


def test_paired_bootstrap_hand_case():
    a, b = np.array([2.0, 3.0, 4.0]), np.array([1.0, 1.0, 1.0])  # every difference positive
    res = stats.paired_bootstrap(a, b, n_boot=1000)
    assert res["diff"] == pytest.approx(2.0) and res["ci_low"] >= 1.0 and res["ci_high"] <= 3.0
    assert res["p"] == pytest.approx(2 / 1001)  # no resample ≤ 0: the smallest p 1000 resamples can give
    res0 = stats.paired_bootstrap(np.array([1.0, -1.0, 1.0, -1.0]), np.zeros(4), n_boot=2000)
    assert res0["p"] > 0.5


def test_bootstrap_p_hand_cases():
    assert stats.bootstrap_p([1.0, 2.0, 3.0]) == pytest.approx(2 * 1 / 4)
    assert stats.bootstrap_p([-1.0, 1.0, 2.0, 3.0]) == pytest.approx(2 * 2 / 5)
    assert stats.bootstrap_p([-1.0, 1.0]) == 1.0


def test_holm_hand_case():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    assert np.allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02])
    assert np.allclose(stats.holm([0.5, np.nan, 0.6]), [1.0, np.nan, 1.0], equal_nan=True)


def test_selectivity_definition():
    assert stats.selectivity(0.2, 0.1) == pytest.approx(2.0)
    assert np.isnan(stats.selectivity(0.2, 0.005)) and np.isnan(stats.selectivity(0.009, 0.5))
    base = {"go": np.array([1.0, 1.0]), "rust": np.array([2.0, 2.0]), "english": np.array([4.0, 4.0])}
    abl = {"go": np.array([1.5, 1.5]), "rust": np.array([2.0, 3.0]), "english": np.array([4.4, 4.4])}
    code, general = stats.rises(abl, base, ["go", "rust"], "english")
    assert code == pytest.approx((0.5 + 0.25) / 2) and general == pytest.approx(0.1)


def test_selectivity_vs_reference_sign_and_interval():
    rng = np.random.default_rng(0)
    base = {s: rng.uniform(1, 2, 30) for s in ("go", "rust", "english")}
    specific = {"go": base["go"] * 1.5, "rust": base["rust"] * 1.5, "english": base["english"] * 1.05}
    uniform = {s: base[s] * 1.1 for s in base}
    res = stats.selectivity_vs_reference(specific, uniform, base, ["go", "rust"], "english", n_boot=200)
    assert res["diff"] == pytest.approx(10.0 - 1.0)  # 0.5/0.05 − 0.1/0.1
    assert res["ci_low"] <= res["diff"] <= res["ci_high"] and res["p"] < 0.05
    same = stats.selectivity_vs_reference(uniform, uniform, base, ["go", "rust"], "english", n_boot=50)
    assert same["diff"] == 0 and same["p"] == 1.0


def test_rises_interval_contains_the_point_and_is_degenerate_for_constant_ratios():
    base = {"go": np.array([1.0, 2.0, 3.0]), "english": np.array([2.0, 4.0, 6.0])}
    abl = {"go": base["go"] * 1.5, "english": base["english"] * 1.2}
    res = stats.rises_ci(abl, base, ["go"], "english", n_boot=200)
    assert np.allclose(res["code"], 0.5) and np.allclose(res["general"], 0.2)  # every resample gives the same ratio
    abl["go"] = np.array([1.0, 2.0, 6.0])
    code, lo, hi = stats.rises_ci(abl, base, ["go"], "english", n_boot=500)["code"]
    assert code == pytest.approx(0.5) and lo < code < hi


def test_mcnemar_exact_against_a_hand_computed_table():
    """a passes 6 problems b fails, b passes 1 problem a fails, 3 concordant: p = 2 * P(X <= 1), X ~ Bin(7, 1/2)
    = 2 * (1 + 7) / 128 = 0.125."""
    a = [1, 1, 1, 1, 1, 1, 0, 1, 0, 0]
    b = [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
    res = stats.mcnemar_exact(a, b)
    assert (res["only_a"], res["only_b"]) == (6, 1) and res["p"] == pytest.approx(16 / 128)
    assert stats.mcnemar_exact(b, a)["p"] == pytest.approx(0.125)
    assert stats.mcnemar_exact([1, 0, 1], [1, 0, 1])["p"] == 1.0  # no discordant pair
    assert stats.mcnemar_exact([1, 0], [0, 1])["p"] == 1.0  # a balanced split is capped at 1
    assert stats.mcnemar_exact([1] * 10, [0] * 10)["p"] == pytest.approx(2 / 1024)
    with pytest.raises(ValueError, match="0 or 1"):
        stats.mcnemar_exact([0.5, 1], [0, 1])


def test_paired_permutation_p_equals_enumerating_every_sign_pattern():
    """Pass (0/1) against pass rates averaged over seeds: the p-value is the share of the 2^m sign patterns of the
    m non-zero differences whose |sum| reaches the observed one, counted here by brute force."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 12).astype(float), rng.integers(0, 3, 12) / 2
    d = (a - b)[a != b]
    naive = np.mean([abs(np.dot(s, d)) >= abs(d.sum()) - 1e-12 for s in itertools.product((-1, 1), repeat=len(d))])
    assert 0 < len(d) <= 12 and stats.paired_permutation_p(a, b) == pytest.approx(naive)
    assert stats.paired_permutation_p(a, a) == 1.0
    assert stats.paired_permutation_p(np.ones(40), np.zeros(40), n_perm=2000) == pytest.approx(1 / 2001)
    assert stats.paired_permutation_p([1, 1, 0, 1], [0, 0, 0, 0]) == pytest.approx(2 / 8)  # |sum| 3 in 2 of 8
    assert stats.paired_permutation_p([1, 0, 1], [0, 1, 0]) == 1.0  # every pattern reaches |1 - 1 + 1|


def test_wilson_interval_hand_case_and_bounds():
    lo, hi = stats.wilson_interval(8, 11)  # z = 1.96: centre (8/11 + z²/22) / (1 + z²/11) = 0.6685, half 0.2341
    assert (lo, hi) == pytest.approx((0.4344, 0.9025), abs=1e-3)
    assert stats.wilson_interval(0, 20)[0] == 0.0 and stats.wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError, match="3 of 2"):
        stats.wilson_interval(3, 2)
