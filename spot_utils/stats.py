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


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order as given); NaN stays NaN and is not counted."""
    from .overlap import holm as holm_list
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    out[ok] = holm_list(p[ok].tolist())
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


def _paired_resamples(frames: list[dict], subsets, n_boot: int, seed: int):
    """Yield, n_boot times, copies of every frame (subset -> per-item array) resampled with the same
    item indices within each subset."""
    rng = np.random.default_rng(seed)
    arrays = [{s: np.asarray(f[s], dtype=float) for s in subsets} for f in frames]
    for _ in range(n_boot):
        pick = {s: rng.integers(0, len(arrays[0][s]), len(arrays[0][s])) for s in subsets}
        yield [{s: a[s][pick[s]] for s in subsets} for a in arrays]


def rises_ci(ablated: dict, baseline: dict, code_subsets, general: str, n_boot: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict:
    """Code and general rise with bootstrap intervals (items resampled within each subset, in pairs)."""
    code, gen = rises(ablated, baseline, code_subsets, general)
    boot = np.array([rises(a, b, code_subsets, general) for a, b in
                     _paired_resamples([ablated, baseline], list(code_subsets) + [general], n_boot, seed)])
    return dict(code=(code, *_interval(boot[:, 0], level)), general=(gen, *_interval(boot[:, 1], level)))


def selectivity_vs_reference(ablated: dict, reference: dict, baseline: dict, code_subsets, general: str,
                             n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                             threshold: float = 0.01) -> dict:
    """Selectivity of a mask minus that of a reference mask (random_uniform), items resampled in pairs.

    Every subset's items are resampled with the same indices for the mask, the reference and the baseline.
    Resamples where either selectivity is undefined are dropped; `defined` is the share kept. The p-value
    is the two-sided bootstrap_p of the difference (NaN when the point difference is undefined).
    """
    def diff(a, r, b):
        return (selectivity(*rises(a, b, code_subsets, general), threshold)
                - selectivity(*rises(r, b, code_subsets, general), threshold))
    point = diff(ablated, reference, baseline)
    diffs = np.array([diff(*f) for f in _paired_resamples([ablated, reference, baseline],
                                                          list(code_subsets) + [general], n_boot, seed)])
    kept = diffs[~np.isnan(diffs)]
    if np.isnan(point) or len(kept) == 0:
        return dict(diff=point, ci_low=float("nan"), ci_high=float("nan"), p=float("nan"), defined=len(kept) / n_boot)
    lo, hi = _interval(kept, level)
    return dict(diff=float(point), ci_low=lo, ci_high=hi, p=bootstrap_p(kept), defined=len(kept) / n_boot)
