"""The one rule for a destroyed point (docs/METHOD.md, Destroyed points): a subset is destroyed when the mean loss of
the ablated model on it is at or above ln |V|, the loss of guessing uniformly over the vocabulary; a point (a mask
at one k) is destroyed when any subset it is read on is. Every producer and reader of `destroyed` asks here."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

DESTROYED = "destroyed"  # status of a value left out because its point is destroyed


def uniform_loss(vocab_size: int) -> float:
    """The threshold: ln |V|, the mean loss of a uniform guess over a vocabulary of vocab_size tokens."""
    return math.log(vocab_size)


def loss_destroyed(mean_loss: float, vocab_size: int) -> bool:
    """True when a mean loss is at or above uniform_loss(vocab_size)."""
    return bool(mean_loss >= uniform_loss(vocab_size))


def any_destroyed(losses: Mapping[str, np.ndarray], subsets: Iterable[str], vocab_size: int) -> bool:
    """True when the mean of the item losses of any of `subsets` (every one must be in `losses`) is destroyed.

    Args:
        losses: {subset: item losses} of one ablated point.
        subsets: the subsets the point is read on (code subsets, general-text references).
        vocab_size: |V| of the model.
    """
    return any(loss_destroyed(float(np.mean(losses[s])), vocab_size) for s in subsets)
