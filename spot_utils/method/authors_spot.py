"""The authors' damage mask (docs/METHOD.md, The authors' damage mask).

The code released with the paper saves as its "code spot", and zeroes, not the top-k of the aggregate A but, per
tensor, the top-k of the weights' magnitude |θ| minus the top-k of |A|: the large weights that the code aggregate
does *not* rank highly. Both sets take ⌊k/100 · n_t⌋ entries of every tensor; ties follow the project's tie order
within a tensor (value descending, then flat index ascending), where the authors' torch.topk leaves them arbitrary.
"""
from __future__ import annotations

import math

import torch

from .masks import PackedMasks
from .selection import check_k, top_count


def _counts(name: str, a: torch.Tensor, weights: dict[str, torch.Tensor], k: float) -> tuple[torch.Tensor, int]:
    if name not in weights:
        raise KeyError(f"authors_spot: no weight tensor named {name!r} (A covers it; the weights hold "
                       f"{len(weights)} tensors)")
    w = weights[name]
    if tuple(w.shape) != tuple(a.shape):
        raise ValueError(f"authors_spot: {name!r} has shape {tuple(w.shape)} in the weights but {tuple(a.shape)} in A")
    return w, math.floor(k / 100 * a.numel())


def authors_spot(A: dict[str, torch.Tensor], weights: dict[str, torch.Tensor],
                 k_percent: float) -> PackedMasks:
    """The authors' damage mask: per tensor, top-k of |θ| minus top-k of |A|.

    Args:
        A: the aggregate, {tensor name: tensor}; its tensors (the decoder tensors scored) are the ones masked.
        weights: {tensor name: weight tensor}, at least every tensor of A, each of its shape (e.g. a model's
            `named_parameters()` with wrapper prefixes stripped).
        k_percent: a percentage (1.0 means 1%) of every tensor's entries, for both top-k sets.

    Returns:
        {tensor name of A: bool mask of its shape} (held bit-packed, built one tensor at a time): entries in the
        tensor's top ⌊k/100 · n_t⌋ by |θ| and not in its top ⌊k/100 · n_t⌋ by |A|.
    """
    k = check_k(k_percent)
    out = PackedMasks()
    for name in A:
        a = A[name]
        w, m = _counts(name, a, weights, k)
        out.add(name, top_count(w.detach().float().abs().cpu(), m) & ~top_count(a.float().abs().cpu(), m))
    return out


def threshold_ties(t: torch.Tensor, m: int) -> tuple[int, int]:
    """(entries equal to the m-th largest value of `t`, how many of them the top m take): the ties the tie order
    decides at one tensor's threshold (quantised weights tie often). (0, 0) when m is 0."""
    if m <= 0:
        return 0, 0
    flat = t.reshape(-1).float()
    value = torch.topk(flat, m).values[-1]
    tied = int((flat == value).sum())
    return tied, m - int((flat > value).sum())


def authors_spot_ties(A: dict[str, torch.Tensor], weights: dict[str, torch.Tensor], k_percent: float) -> dict[str, int]:
    """How often ties decide the authors' mask at k: entries tied at the |θ| thresholds and at the |A| thresholds,
    summed over the tensors of A, and how many of those the tie order took ({'weights_tied', 'weights_taken',
    'aggregate_tied', 'aggregate_taken'}), for reports."""
    k = check_k(k_percent)
    totals = dict.fromkeys(("weights_tied", "weights_taken", "aggregate_tied", "aggregate_taken"), 0)
    for name in A:
        a = A[name]
        w, m = _counts(name, a, weights, k)
        for prefix, t in (("weights", w.detach().float().abs()), ("aggregate", a.float().abs())):
            tied, taken = threshold_ties(t, m)
            totals[f"{prefix}_tied"] += tied
            totals[f"{prefix}_taken"] += taken
    return totals
