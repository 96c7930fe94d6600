"""Stage 07's rows (docs/METHOD.md, Tuning): an arm's code gain and general forgetting against the untrained model,
with two-stage paired bootstrap intervals (seeds, then items within each subset, the same items for the arm and the
untrained model), its trainable count and its gain per trained parameter."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .metric_names import TRAINABLE_COUNT, TUNING_CODE_GAIN, TUNING_GAIN_PER_PARAMETER, TUNING_GENERAL_FORGETTING
from .rows import row


def _by_subset(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {s: g.sort_values("item")["loss"].to_numpy(dtype=float) for s, g in frame.groupby("subset", sort=False)}


def pooled_rise(seeds: list[dict[str, np.ndarray]], untrained: dict[str, np.ndarray], subsets, n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean over `subsets` of (an arm's loss, mean over its seeds and items) / (the untrained loss) − 1, with its
    percentile interval: each resample draws the seeds with replacement, then every subset's items (the same items
    for the arm and the untrained model).

    Args:
        seeds: per seed of the arm, {subset: item losses}; untrained: {subset: item losses} on the same items.
        subsets: the subsets averaged over.

    Returns:
        (value, ci_low, ci_high).
    """
    rng = np.random.default_rng(seed)
    seed_idx = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    value, boot = [], []
    for s in subsets:
        arm = np.stack([per_seed[s] for per_seed in seeds])  # (seeds, items)
        base = untrained[s]
        value.append(arm.mean() / base.mean() - 1)
        items = rng.integers(0, len(base), size=(n_boot, len(base)))
        per_seed = arm[:, items].mean(-1)  # (seeds, n_boot)
        boot.append(np.take_along_axis(per_seed.T, seed_idx, 1).mean(1) / base[items].mean(1) - 1)
    boot = np.mean(boot, axis=0)
    alpha = (1 - level) / 2
    return float(np.mean(value)), float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))


def gain_rows(seeds: list[pd.DataFrame], untrained: pd.DataFrame, code_parts: dict[str, list[str]], references,
              trainable: int, labels: dict, n_boot: int = 1000) -> list[dict]:
    """Rows of one arm, its seeds pooled: tuning_code_gain (1 − tuned / untrained code loss; subset 'code' over every
    code subset, 'code:<part>' per part), tuning_general_forgetting per reference, trainable_count and
    tuning_gain_per_parameter (the code gain over the trainable count).

    Args:
        seeds: the arm's item losses (the loss metric group's frame) per seed; untrained: the untrained model's.
        code_parts: {part: code subsets}, e.g. trained, held_out, unseen (empty parts are left out).
        references: the general-text subsets forgetting is measured on.
        trainable: entries the arm trains.
        labels: fields every row carries (arm, mask_kind, configuration, k_percent, ...).
    """
    arm, base = [_by_subset(f) for f in seeds], _by_subset(untrained)
    every_code = [s for part in code_parts.values() for s in part]
    gain, lo, hi = pooled_rise(arm, base, every_code, n_boot)
    out = [row(metric=TUNING_CODE_GAIN, subset="code", value=-gain, ci_low=-hi, ci_high=-lo, n=len(every_code),
               **labels)]
    for part, members in code_parts.items():
        if members:
            g, g_lo, g_hi = pooled_rise(arm, base, members, n_boot)
            out.append(row(metric=TUNING_CODE_GAIN, subset=f"code:{part}", value=-g, ci_low=-g_hi, ci_high=-g_lo,
                           n=len(members), **labels))
    for ref in references:
        f, f_lo, f_hi = pooled_rise(arm, base, [ref], n_boot)
        out.append(row(metric=TUNING_GENERAL_FORGETTING, subset=ref, reference=ref, value=f, ci_low=f_lo,
                       ci_high=f_hi, n=len(base[ref]), **labels))
    out.append(row(metric=TRAINABLE_COUNT, subset="parameters", value=float(trainable), n=len(seeds), **labels))
    out.append(row(metric=TUNING_GAIN_PER_PARAMETER, subset="code", value=-gain / trainable, ci_low=-hi / trainable,
                   ci_high=-lo / trainable, n=len(every_code), **labels))
    return out
