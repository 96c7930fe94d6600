"""A run's headline: the numbers the index and the cross-model comparison read from its metrics rows (the spot,
code_over_general and random_uniform at one k), the spot's damage-matched verdicts and their sensitivity to the
destroyed rule."""
from __future__ import annotations

import pandas as pd

from ..analysis.destroyed import CODE_COLLAPSE
from ..analysis.metric_names import CODE_RISE, GENERAL_RISE, LOSS, MATCHED_EXCESS, SELECTIVITY
from ..analysis.rows import to_frame
from ..data.sources import CODE_LANGUAGES, PROSE_LANGUAGES as GENERAL_LANGUAGES
from ..method.mask_kinds import kinds
from .tables import sensitivity, verdict

HEADLINE_KINDS = kinds(headline=True)  # the mask-kind table's headline kinds
HEADLINE_METRICS = (CODE_RISE, GENERAL_RISE, SELECTIVITY)
LOSS_SUBSETS = CODE_LANGUAGES + GENERAL_LANGUAGES  # held-out loss subsets (not the likelihood sets)


def run_headline(rows: list[dict], k_percent: float | None = None) -> dict:
    """Headline numbers of one run's metrics rows at k (default 1% if measured, else the largest k):
    mean baseline loss over the code and general loss subsets, and code_rise (subset 'code') / general_rise /
    selectivity of the spot, code_over_general and random_uniform (the global configuration, or global granularity
    in runs without configurations; against literary English, the first general-text reference; zero mode, mean
    over seeds); per kind whether the point is destroyed (`<kind>.destroyed`: code under the median rule or the
    reference) and whether code collapses with the reference intact (`<kind>.collapse`, status code_collapse); the
    spot's verdicts and their sensitivity lines (spot_verdicts, spot_sensitivity)."""
    df = to_frame(rows)
    ks = sorted(float(k) for k in df.k_percent.dropna().unique())
    k = k_percent if k_percent is not None else (1.0 if 1.0 in ks else (ks[-1] if ks else None))
    out = {"k_percent": k, "model": next((m for m in df.model.dropna()), None)}
    base = df[(df.mask_kind == "baseline") & (df.metric == LOSS) & df.subset.isin(LOSS_SUBSETS)]
    out["baseline_loss"] = float(base.value.mean()) if len(base) else None
    where = df.configuration if df.configuration.notna().any() else df.granularity
    first_reference = next(iter(df.reference.dropna()), None)
    at_k = df[(df.k_percent == k) & (where.isna() | (where == "global"))
              & (df.reference.isna() | (df.reference == first_reference))
              & (df["mode"].isna() | (df["mode"] == "zero"))
              & ~((df.metric == CODE_RISE) & (df.subset != "code"))]  # not the code:scored / code:unseen parts
    for kind in HEADLINE_KINDS:
        for metric in HEADLINE_METRICS:
            v = at_k[(at_k.mask_kind == kind) & (at_k.metric == metric)].value.dropna()
            out[f"{kind}.{metric}"] = float(v.mean()) if len(v) else None
        rises = at_k[(at_k.mask_kind == kind) & at_k.metric.isin([CODE_RISE, GENERAL_RISE])]
        out[f"{kind}.destroyed"] = bool(rises.destroyed.fillna(False).astype(bool).any()) if len(rises) else None
        out[f"{kind}.collapse"] = bool((rises.status == CODE_COLLAPSE).any()) if len(rises) else None
    out["spot.verdicts"] = spot_verdicts(df)
    out["spot.sensitivity"] = spot_sensitivity(df)
    return out


def spot_verdicts(df: pd.DataFrame) -> dict[str, list[str]]:
    """{configuration: the damage-matched verdict on the spot against each general-text reference} (empty for runs
    without the damage-matched comparison)."""
    if not (df.metric == MATCHED_EXCESS).any():
        return {}
    refs = list(dict.fromkeys(df.reference.dropna()))
    return {c: [verdict(df, c, r) for r in refs] for c in dict.fromkeys(df.configuration.dropna())}


def spot_sensitivity(df: pd.DataFrame) -> dict[str, list[str | None]]:
    """{configuration: each spot verdict's sensitivity line (tables.sensitivity, None without the any-subset rows)
    against each general-text reference} (empty for runs without the damage-matched comparison)."""
    if not (df.metric == MATCHED_EXCESS).any():
        return {}
    refs = list(dict.fromkeys(df.reference.dropna()))
    return {c: [sensitivity(df, c, r) for r in refs] for c in dict.fromkeys(df.configuration.dropna())}
