"""Overlap between top-k sets and its significance against chance (SPEC §5)."""
from __future__ import annotations

import itertools

import pandas as pd
from scipy.stats import hypergeom

from .masks import mask_and, mask_count, mask_or


def jaccard(a: dict, b: dict) -> float:
    union = mask_count(mask_or(a, b))
    return mask_count(mask_and(a, b)) / union if union else 0.0


def overlap_coefficient(a: dict, b: dict) -> float:
    smaller = min(mask_count(a), mask_count(b))
    return mask_count(mask_and(a, b)) / smaller if smaller else 0.0


def uniform_null(n_total: int, size_a: int, size_b: int, observed: int) -> tuple[float, float]:
    """(expected overlap, P(overlap ≥ observed)) when B is a uniform random set over all entries."""
    expected = size_a * size_b / n_total
    return expected, float(hypergeom.sf(observed - 1, n_total, size_a, size_b))


def pairwise(masks_by_lang: dict[str, dict]) -> pd.DataFrame:
    """One row per language pair: sizes, intersection, Jaccard, overlap coefficient, observed/expected, p."""
    any_masks = next(iter(masks_by_lang.values()))
    n_total = sum(m.numel() for m in any_masks.values())
    rows = []
    for la, lb in itertools.combinations(masks_by_lang, 2):
        a, b = masks_by_lang[la], masks_by_lang[lb]
        inter = mask_count(mask_and(a, b))
        expected, p = uniform_null(n_total, mask_count(a), mask_count(b), inter)
        rows.append(dict(a=la, b=lb, size_a=mask_count(a), size_b=mask_count(b), intersection=inter,
                         jaccard=jaccard(a, b), overlap=overlap_coefficient(a, b),
                         obs_over_exp=inter / expected if expected else float("nan"), p_uniform=p))
    df = pd.DataFrame(rows)
    df["p_uniform_holm"] = holm(df.p_uniform) if len(df) else []
    return df


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given)."""
    p = list(pvalues)
    order = sorted(range(len(p)), key=lambda i: p[i])
    adjusted, running = [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted
