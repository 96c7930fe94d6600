"""Combining per-language scores into one aggregate per parameter (docs/METHOD.md, Aggregation)."""
from __future__ import annotations

import torch

AGGREGATIONS = ("sum_abs", "normalized_sum", "rank_mean", "min", "max")


def aggregate(scores_by_lang: dict[str, dict[str, torch.Tensor]], method: str = "sum_abs") -> dict[str, torch.Tensor]:
    """A ≥ 0 per parameter from {language: {param: signed score}}.

    sum_abs: Σ_l |S_l| (the paper's); normalized_sum: Σ_l |S_l| / Σ|S_l| over all entries;
    rank_mean: mean over languages of the percentile rank of |S_l| among all scoped entries;
    min / max: elementwise over languages of |S_l|.
    """
    if method not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {method!r}; accepted: {AGGREGATIONS}")
    if not scores_by_lang:
        raise ValueError("aggregate needs the scores of at least one language")
    langs = list(scores_by_lang)
    names = list(scores_by_lang[langs[0]])
    for lang in langs[1:]:
        if list(scores_by_lang[lang]) != names:
            raise ValueError(f"scores of {lang!r} cover other parameters than those of {langs[0]!r}")
        for n in names:
            shape, first = tuple(scores_by_lang[lang][n].shape), tuple(scores_by_lang[langs[0]][n].shape)
            if shape != first:
                raise ValueError(f"scores of {n!r} of {lang!r} has shape {shape}, of {langs[0]!r} {first}")
    out = {n: torch.zeros_like(scores_by_lang[langs[0]][n], dtype=torch.float32) for n in names}
    for i, lang in enumerate(langs):
        scores = scores_by_lang[lang]
        scale = 1.0
        if method == "normalized_sum":
            total = sum(s.abs().double().sum() for s in scores.values())
            scale = 1.0 / float(total) if total > 0 else 0.0
        ranks = _percentile_ranks(scores) if method == "rank_mean" else None
        for n in names:
            value = ranks[n] if ranks is not None else scores[n].abs().float()
            if method in ("sum_abs", "normalized_sum"):
                out[n].add_(value, alpha=scale)
            elif method == "rank_mean":
                out[n].add_(value, alpha=1.0 / len(langs))
            elif i == 0:
                out[n].copy_(value)
            else:
                torch.minimum(out[n], value, out=out[n]) if method == "min" else torch.maximum(out[n], value, out=out[n])
    return out


def _percentile_ranks(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Percentile rank in [0, 1] of every |score| among all entries (ties share the lower rank).

    One sorted float32 copy of all |scores| (sorted in place, no index array), then ranks tensor by tensor.
    """
    sorted_vals = torch.cat([s.abs().float().flatten() for s in scores.values()])
    sorted_vals.numpy().sort()
    denom = max(len(sorted_vals) - 1, 1)
    return {n: (torch.searchsorted(sorted_vals, s.abs().float().flatten()).float() / denom).view(s.shape)
            for n, s in scores.items()}
