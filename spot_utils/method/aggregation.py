"""Combining per-language scores into one aggregate per parameter (docs/METHOD.md, Aggregation).

Languages are folded in one at a time, so memory holds the aggregate and one language's scores whatever the
number of languages (rank_mean adds one sorted float32 copy of that language's |S|).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..base.run_files import tensors_of

AGGREGATIONS = ("sum_abs", "normalized_sum", "rank_mean", "min", "max")


def aggregate(scores_by_lang: dict[str, dict[str, torch.Tensor] | str | Path], method: str = "sum_abs") -> dict[str, torch.Tensor]:
    """A ≥ 0 per parameter from {language: {param: signed score}}.

    The values may also be paths of score files written by `spot_utils.runs.save_tensors`: each is then read when
    its turn comes and dropped after, so at most one language's scores are held beside the aggregate. Same
    result either way.

    sum_abs: Σ_l |S_l| (the paper's); normalized_sum: Σ_l |S_l| / Σ|S_l| over all entries;
    rank_mean: mean over languages of the percentile rank of |S_l| among all scoped entries;
    min / max: elementwise over languages of |S_l|.

    Args:
        scores_by_lang: {language: scores or the path of a score file}; every language has the same tensors.
        method: a name in AGGREGATIONS.

    Returns:
        {parameter name: float32 aggregate, ≥ 0}.
    """
    folder = Aggregator(method, len(scores_by_lang))
    for lang, value in scores_by_lang.items():
        folder.add(lang, tensors_of(value))
    return folder.result()


class Aggregator:
    """`aggregate` one language at a time: add(lang, scores) for each of n_languages languages, then result()."""

    def __init__(self, method: str, n_languages: int):
        if method not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {method!r}; accepted: {AGGREGATIONS}")
        if n_languages < 1:
            raise ValueError("aggregate needs the scores of at least one language")
        self.method, self.n_languages = method, n_languages
        self.first, self.names, self.out, self.added = None, None, None, 0

    def add(self, lang: str, scores: dict[str, torch.Tensor]) -> None:
        """Fold one language's signed scores into the aggregate."""
        if self.added == self.n_languages:
            raise ValueError(f"all {self.n_languages} languages were already added; {lang!r} is one too many")
        if self.out is None:
            self.first, self.names = lang, list(scores)
            self.out = {n: torch.zeros_like(scores[n], dtype=torch.float32) for n in self.names}
        elif scores.keys() != set(self.names):
            raise ValueError(f"scores of {lang!r} cover other parameters than those of {self.first!r}")
        else:
            for n in self.names:
                shape, first = tuple(scores[n].shape), tuple(self.out[n].shape)
                if shape != first:
                    raise ValueError(f"scores of {n!r} of {lang!r} has shape {shape}, of {self.first!r} {first}")
        method, out = self.method, self.out
        scale = 1.0
        if method == "normalized_sum":
            total = sum(s.abs().double().sum() for s in scores.values())
            scale = 1.0 / float(total) if total > 0 else 0.0
        values = _percentile_ranks(scores) if method == "rank_mean" else ((n, s.abs().float()) for n, s in scores.items())
        for n, value in values:
            if method in ("sum_abs", "normalized_sum"):
                out[n].add_(value, alpha=scale)
            elif method == "rank_mean":
                out[n].add_(value, alpha=1.0 / self.n_languages)
            elif self.added == 0:
                out[n].copy_(value)
            else:
                torch.minimum(out[n], value, out=out[n]) if method == "min" else torch.maximum(out[n], value, out=out[n])
        self.added += 1

    def result(self) -> dict[str, torch.Tensor]:
        """The aggregate, once every language was added."""
        if self.added != self.n_languages:
            raise ValueError(f"{self.added} of {self.n_languages} languages were added: add the others first")
        return self.out


def _percentile_ranks(scores: dict[str, torch.Tensor]):
    """(name, percentile rank in [0, 1] of every |score| among all entries), tensor by tensor (ties share the
    lower rank).

    One sorted float32 copy of all |scores| (sorted in place, no index array); each tensor's ranks are made when
    asked for, so at most one tensor's ranks exist at a time.
    """
    sorted_vals = torch.cat([s.abs().float().flatten() for s in scores.values()])
    sorted_vals.numpy().sort()
    denom = max(len(sorted_vals) - 1, 1)
    for n, s in scores.items():
        yield n, (torch.searchsorted(sorted_vals, s.abs().float().flatten()).float() / denom).view(s.shape)
