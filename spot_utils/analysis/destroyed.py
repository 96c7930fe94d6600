"""The one rule for a destroyed point (docs/METHOD.md, Destroyed points). Every producer and reader of `destroyed`,
of a point's status and of the capped losses asks here.

The threshold is ln |V|: the mean loss of a uniform guess over a vocabulary of |V| tokens. A mean loss at ln |V|
says that the model's predictions carry, on average, no more information about the next token than a uniform guess
would; it does not say that the model guesses uniformly (destroyed points still get some tokens right).

A subset is destroyed when its mean item loss reaches ln |V|. Code is destroyed when the median over the code
subsets of their mean losses does (rule "median", the default), so that one subset that blows up (bash at
1.02 · ln |V| while the median code loss is 0.67 · ln |V|) does not decide the point; rule "any" is the old rule (any
code subset), kept for the sensitivity rows. Against a general-text reference a point is

* kept (status None) when neither code nor the reference is destroyed: each subset's loss then enters the rises
  capped at ln |V| (`capped`);
* DESTROYED when the reference is destroyed (whatever code does): nothing is read from it;
* CODE_COLLAPSE when code is destroyed and the reference is not: "code collapses, general text intact", the
  outcome a code-specific region predicts. It has no matched excess (code is beyond the range where random damage
  can be matched), but its rises are reported, never discarded.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

DESTROYED = "destroyed"  # status of a value left out because the general-text reference is destroyed
CODE_COLLAPSE = "code_collapse"  # status of a point whose code is destroyed while the reference is not
COLLAPSE_LABEL = "code collapses, general text intact"  # how tables and figures name CODE_COLLAPSE
RULES = ("median", "any")  # how code subsets combine: their median loss (default) or any one of them (the old rule)
DEFAULT_RULE = RULES[0]


def uniform_loss(vocab_size: int) -> float:
    """The threshold: ln |V|, the mean loss of a uniform guess over a vocabulary of vocab_size tokens."""
    return math.log(vocab_size)


def loss_destroyed(mean_loss: float, vocab_size: int) -> bool:
    """True when a mean loss is at or above uniform_loss(vocab_size) (one subset's flag)."""
    return bool(mean_loss >= uniform_loss(vocab_size))


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown destroyed rule {rule!r}; known: {RULES}")


def _means(losses: Mapping[str, np.ndarray], subsets: Iterable[str]) -> list[float]:
    return [float(np.mean(losses[s])) for s in subsets]


def any_destroyed(losses: Mapping[str, np.ndarray], subsets: Iterable[str], vocab_size: int) -> bool:
    """True when the mean of the item losses of any of `subsets` (every one must be in `losses`) is destroyed.

    Args:
        losses: {subset: item losses} of one ablated point.
        subsets: the subsets to read.
        vocab_size: |V| of the model.
    """
    return any(loss_destroyed(m, vocab_size) for m in _means(losses, subsets))


def code_loss(losses: Mapping[str, np.ndarray], code_subsets: Iterable[str], rule: str = DEFAULT_RULE) -> float:
    """The code loss the rule compares with ln |V|: the median ("median") or the largest ("any") of the code subsets'
    mean item losses.

    Args:
        losses: {subset: item losses} of one point (every code subset must be in it).
        code_subsets: the code subsets (at least one).
        rule: one of RULES.

    Returns:
        That loss in nats per token.
    """
    _check_rule(rule)
    means = _means(losses, code_subsets)
    if not means:
        raise ValueError("code_loss needs at least one code subset")
    return float(np.median(means) if rule == "median" else max(means))


def code_destroyed(losses: Mapping[str, np.ndarray], code_subsets: Iterable[str], vocab_size: int,
                   rule: str = DEFAULT_RULE) -> bool:
    """Whether code is destroyed: code_loss under `rule` at or above ln |V|.

    Args:
        losses: {subset: item losses} of one point.
        code_subsets: the code subsets read (at least one).
        vocab_size: |V| of the model.
        rule: "median" (the median over code subsets) or "any" (any code subset).

    Returns:
        True when destroyed.
    """
    return loss_destroyed(code_loss(losses, code_subsets, rule), vocab_size)


def _references(references) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def point_status(losses: Mapping[str, np.ndarray], code_subsets: Iterable[str], references, vocab_size: int,
                 rule: str = DEFAULT_RULE) -> str | None:
    """A point's status against general-text references (the module docstring).

    Args:
        losses: {subset: item losses} of one point.
        code_subsets: the code subsets read (none: code is not destroyed).
        references: one general-text reference or several (destroyed when any of them is).
        vocab_size: |V| of the model.
        rule: one of RULES, for the code subsets.

    Returns:
        None (kept), DESTROYED (a reference at or above ln |V|, whatever code does) or CODE_COLLAPSE (code destroyed
        under the rule, every reference below ln |V|).
    """
    if any_destroyed(losses, _references(references), vocab_size):
        return DESTROYED
    code = list(code_subsets)
    return CODE_COLLAPSE if code and code_destroyed(losses, code, vocab_size, rule) else None


def point_destroyed(losses: Mapping[str, np.ndarray], code_subsets: Iterable[str], references, vocab_size: int,
                    rule: str = DEFAULT_RULE) -> bool:
    """Whether a point is not kept: code destroyed under the rule, or any reference destroyed (point_status is not
    None). What the sweep and random_uniform's curve leave out.

    Args:
        losses, code_subsets, references, vocab_size, rule: as for point_status.

    Returns:
        True when the point has a status (DESTROYED or CODE_COLLAPSE).
    """
    return point_status(losses, code_subsets, references, vocab_size, rule) is not None


def capped(losses: Mapping[str, np.ndarray], subsets: Iterable[str], vocab_size: int) -> dict[str, np.ndarray]:
    """A kept point's item losses as they enter the rises: every subset of `subsets` whose mean loss exceeds ln |V|
    has its item losses scaled by ln |V| / mean, so that its mean is exactly ln |V|; other subsets are unchanged.

    Scaling (rather than clipping each item at ln |V|) makes the subset's rise exactly ln |V| / baseline − 1, keeps
    its items' relative spread for the bootstrap, and leaves a subset below ln |V| untouched. The cap says that past
    a uniform guess a subset has nothing more to lose that the comparison can read, so one subset cannot dominate
    the mean code rise. (In a bootstrap replicate the scaled subset's mean varies around ln |V|.)

    Args:
        losses: {subset: item losses} of one point.
        subsets: the subsets to cap (code subsets and references; others are copied unchanged).
        vocab_size: |V| of the model.

    Returns:
        A new {subset: item losses} (float arrays).
    """
    cap = uniform_loss(vocab_size)
    out = {s: np.array(v, dtype=float) for s, v in losses.items()}
    for s in subsets:
        mean = float(out[s].mean())
        if mean > cap:
            out[s] = out[s] * (cap / mean)
    return out


def loss_ratio(mean_loss: float, vocab_size: int) -> float:
    """A mean loss as a multiple of ln |V| (1 = the loss of a uniform guess)."""
    return float(mean_loss / uniform_loss(vocab_size))
