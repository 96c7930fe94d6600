"""Uncertainty over evaluation items (docs/METHOD.md, Statistical tests): bootstrap intervals, paired tests against a reference mask,
Holm correction, and the selectivity of an ablation with its paired comparison against random_uniform."""
from __future__ import annotations

import numpy as np
from scipy import stats as sps


def bootstrap_ci(stat, *arrays, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 vectorized: bool = False) -> tuple[float, float]:
    """Percentile interval of stat(*resampled arrays); all arrays are resampled with the same item indices.

    vectorized: stat takes 2-D arrays (n_boot, n) and returns n_boot values (reducing over the last axis).
    """
    arrays = [np.asarray(a, dtype=float) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("paired arrays must have the same length")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    if vectorized:
        values = np.asarray(stat(*(a[idx] for a in arrays)), dtype=float)
    else:
        values = np.array([stat(*(a[i] for a in arrays)) for i in idx])
    return _interval(values, level)


def _interval(values, level):
    """Central percentile interval of resampled values at `level`."""
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def mean_ci(values, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Bootstrap interval of the mean (vectorised)."""
    return bootstrap_ci(lambda a: a.mean(-1), values, n_boot=n_boot, seed=seed, level=level, vectorized=True)


def wilcoxon_p(a, b) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the per-item differences a − b (1.0 when all are zero)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(d, zero_method="wilcox").pvalue)


def bootstrap_p(resampled) -> float:
    """Two-sided bootstrap p-value that the resampled statistic's centre is 0:
    2 · min(1 + #(≤ 0), 1 + #(≥ 0)) / (n + 1), capped at 1 — never 0, so it reads as p ≤ 2/(n + 1) at best."""
    v = np.asarray(resampled, dtype=float)
    return float(min(1.0, 2 * (1 + min(np.sum(v <= 0), np.sum(v >= 0))) / (len(v) + 1)))


def paired_bootstrap(a, b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of a − b over paired items, its percentile interval and a two-sided bootstrap p-value (bootstrap_p)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = d[idx].mean(1)
    lo, hi = _interval(means, level)
    return dict(diff=float(d.mean()), ci_low=lo, ci_high=hi, p=bootstrap_p(means))


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion successes / n."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n and n > 0, got {successes} of {n}")
    z = sps.norm.ppf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _paired_outcomes(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired outcomes must be two 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    return a, b


def mcnemar_exact(a, b) -> dict:
    """Exact (binomial) two-sided McNemar test of paired pass/fail outcomes a and b (1 = pass, 0 = fail):
    only_a = problems a passes and b fails, only_b the reverse; p = P(a split at least as uneven | only_a + only_b
    discordant pairs, each side 1/2); p = 1 without discordant pairs."""
    a, b = _paired_outcomes(a, b)
    if not np.isin(a, (0, 1)).all() or not np.isin(b, (0, 1)).all():
        raise ValueError("mcnemar_exact: outcomes must be 0 or 1")
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(min(1.0, 2 * sps.binom.cdf(min(only_a, only_b), n, 0.5)))
    return dict(only_a=only_a, only_b=only_b, p=p)


def paired_permutation_p(a, b, n_perm: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of mean(a − b) for paired per-item scores (e.g. a mask's pass and
    random_uniform's pass rate averaged over its seeds): exact over all 2^m sign patterns of the m non-zero
    differences when 2^m <= n_perm, else Monte Carlo with the observed pattern counted ((hits + 1) / (n_perm + 1))."""
    a, b = _paired_outcomes(a, b)
    d = (a - b)[a != b]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    tol = 1e-12 * max(1.0, observed)
    if 2 ** d.size <= n_perm:
        signs = 1 - 2 * ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1)
        return float((np.abs(signs @ d) >= observed - tol).mean())
    signs = np.random.default_rng(seed).choice((-1.0, 1.0), size=(n_perm, d.size))
    return float(((np.abs(signs @ d) >= observed - tol).sum() + 1) / (n_perm + 1))


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given); NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (len(ok) - rank) * p[i]))
        out[i] = running
    return out


def relative_rise(ablated, baseline) -> float:
    """r = mean(ablated) / mean(baseline) − 1."""
    return float(np.mean(ablated) / np.mean(baseline) - 1.0)


def rises(ablated: dict, baseline: dict, code_subsets, general: str) -> tuple[float, float]:
    """(code rise, general rise): r = relative_rise per subset; code = mean of r over code subsets."""
    code = float(np.mean([relative_rise(ablated[s], baseline[s]) for s in code_subsets]))
    return code, relative_rise(ablated[general], baseline[general])


def selectivity(code_rise: float, general_rise: float, threshold: float = 0.01) -> float:
    """code rise / general rise when both exceed `threshold` (docs/METHOD.md, Selectivity), else NaN."""
    return code_rise / general_rise if code_rise > threshold and general_rise > threshold else float("nan")


def _paired_indices(sizes: dict[str, int], n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Item indices of n_boot resamples of every subset ({subset: (n_boot, n_items)}), drawn in subset order; every
    frame resampled with them is resampled in pairs."""
    rng = np.random.default_rng(seed)
    return {s: rng.integers(0, n, size=(n_boot, n)) for s, n in sizes.items()}


def _boot_rises(ablated: dict, baseline: dict, idx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per subset, the relative rise in every resample (n_boot,)."""
    return {s: np.asarray(ablated[s], dtype=float)[i].mean(1) / np.asarray(baseline[s], dtype=float)[i].mean(1) - 1
            for s, i in idx.items()}


def _code_general(r: dict[str, np.ndarray], code_subsets, general: str) -> tuple[np.ndarray, np.ndarray]:
    return np.mean([r[s] for s in code_subsets], axis=0), r[general]


def rises_ci(ablated: dict, baseline: dict, code_subsets, general: str, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """Code and general rise with bootstrap intervals (items resampled within each subset, in pairs)."""
    code, gen = rises(ablated, baseline, code_subsets, general)
    subsets = list(dict.fromkeys([*code_subsets, general]))
    idx = _paired_indices({s: len(baseline[s]) for s in subsets}, n_boot, seed)
    boot_code, boot_gen = _code_general(_boot_rises(ablated, baseline, idx), code_subsets, general)
    return dict(code=(code, *_interval(boot_code, level)), general=(gen, *_interval(boot_gen, level)))


def _selectivity(code, general, threshold: float):
    """selectivity, vectorised: NaN where a rise is at or below the threshold."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((code > threshold) & (general > threshold), code / general, np.nan)


def selectivity_vs_reference(ablated: dict, reference: dict, baseline: dict, code_subsets, general: str,
                             n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                             threshold: float = 0.01) -> dict:
    """Selectivity of a mask minus that of a reference mask (random_uniform), items resampled in pairs.

    Every subset's items are resampled with the same indices for the mask, the reference and the baseline.
    Resamples where either selectivity is undefined are dropped; `defined` is the share kept. The p-value
    is the two-sided bootstrap_p of the difference (NaN when the point difference is undefined); se is the standard
    deviation of the kept differences.
    """
    point = (selectivity(*rises(ablated, baseline, code_subsets, general), threshold)
             - selectivity(*rises(reference, baseline, code_subsets, general), threshold))
    subsets = list(dict.fromkeys([*code_subsets, general]))
    idx = _paired_indices({s: len(baseline[s]) for s in subsets}, n_boot, seed)
    diffs = (_selectivity(*_code_general(_boot_rises(ablated, baseline, idx), code_subsets, general), threshold)
             - _selectivity(*_code_general(_boot_rises(reference, baseline, idx), code_subsets, general), threshold))
    kept = diffs[~np.isnan(diffs)]
    if np.isnan(point) or len(kept) == 0:
        return dict(diff=point, ci_low=float("nan"), ci_high=float("nan"), p=float("nan"), se=float("nan"),
                    defined=len(kept) / n_boot)
    lo, hi = _interval(kept, level)
    return dict(diff=float(point), ci_low=lo, ci_high=hi, p=bootstrap_p(kept),
                se=float(kept.std(ddof=1)) if len(kept) > 1 else float("nan"), defined=len(kept) / n_boot)
