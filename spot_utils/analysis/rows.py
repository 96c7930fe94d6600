"""Tidy metric rows (docs/METHOD.md, metrics.json rows), bootstrap intervals and the relative loss rise of an ablation."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..base.io import write_json, write_text
from .destroyed import loss_destroyed
from .metric_names import ACCURACY, LOSS, LOSS_RISE, PERPLEXITY
from .stats import bootstrap_ci, mean_ci, relative_rise

FIELDS = ("model", "configuration", "k_percent", "granularity", "mask_kind", "seed", "mode", "criterion", "aggregation",
          "n_entries", "control_of", "arm", "reference", "metric", "subset", "value", "n", "ci_low", "ci_high", "destroyed",
          "status", "schema_version")
SCHEMA_VERSION = 3  # of the rows this code writes; what changed in each: docs/METHOD.md, metrics.json rows


def _complete(fields: dict) -> dict:
    """`fields` with every row field present (absent ones None); KeyError naming an unknown field."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise KeyError(f"unknown metric fields {sorted(unknown)}; accepted: {FIELDS}")
    return {f: fields.get(f) for f in FIELDS}


def row(**fields) -> dict:
    """A new metrics row with every row field present (absent ones None), stamped schema_version SCHEMA_VERSION."""
    return _complete(dict(fields, schema_version=SCHEMA_VERSION))


def schema_version(r: dict) -> int:
    """The schema version of a metrics row; rows written before the field existed are version 1."""
    return r.get("schema_version") or 1


def loss_rows(items: pd.DataFrame, baseline: pd.DataFrame | None, boot_seed: int = 0,
              vocab_size: int | None = None, **labels) -> list[dict]:
    """Rows of mean loss, perplexity (exp of the mean loss), accuracy and, against a baseline on the same
    items, loss_rise per subset, each with a bootstrap interval over items. `labels` (mask_kind, seed, ...)
    go into every row. vocab_size (|V|): every row of a subset gets `destroyed` (destroyed.loss_destroyed of its
    mean loss)."""
    rows = []
    for subset, g in items.groupby("subset", sort=False):
        g = g.sort_values("item")
        mean_loss = float(g["loss"].to_numpy().mean())
        flag = dict(destroyed=None if vocab_size is None else loss_destroyed(mean_loss, vocab_size))
        for metric in (LOSS, ACCURACY):
            v = g[metric].to_numpy()
            lo, hi = mean_ci(v, seed=boot_seed)
            rows.append(row(metric=metric, subset=subset, value=float(v.mean()), n=len(v), ci_low=lo, ci_high=hi,
                            **flag, **labels))
            if metric == LOSS:
                rows.append(row(metric=PERPLEXITY, subset=subset, value=float(np.exp(v.mean())), n=len(v),
                                ci_low=float(np.exp(lo)), ci_high=float(np.exp(hi)), **flag, **labels))
        if baseline is not None:
            b = baseline[baseline.subset == subset].sort_values("item")["loss"].to_numpy()
            a = g["loss"].to_numpy()
            lo, hi = bootstrap_ci(lambda x, y: x.mean(-1) / y.mean(-1) - 1, a, b, seed=boot_seed, vectorized=True)
            rows.append(row(metric=LOSS_RISE, subset=subset, value=relative_rise(a, b), n=len(a),
                            ci_low=lo, ci_high=hi, **flag, **labels))
    return rows


def write_metrics(path, rows: list[dict]) -> None:
    """Write metrics.json (a list of tidy rows, each with its schema_version) and the same rows as metrics.csv beside
    it, each atomically."""
    write_json(path, [_complete(r) for r in rows])
    write_text(Path(path).with_suffix(".csv"), to_frame(rows).to_csv(index=False))


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a frame with every field a column (rows of any schema version; absent fields None)."""
    return pd.DataFrame([_complete(r) for r in rows], columns=list(FIELDS))


def is_missing(v) -> bool:
    """None or NaN: a value a table shows as a dash."""
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def format_rise(r) -> str:
    """A relative rise as a signed percentage: 16.58 -> '+1,658%', 0.004 -> '+0.4%', -0.2 -> '−20%', and below
    0.1% with one significant digit: -0.00003 -> '−0.003%', 0 -> '0%'."""
    if is_missing(r):
        return "–"
    p = 100 * float(r)
    if p == 0:
        return "0%"
    decimals = 0 if abs(p) >= 1 else 1 if abs(p) >= 0.095 else -math.floor(math.log10(abs(p)))
    text = f"{p:+,.{decimals}f}%"
    return text.replace("-", "−")


def format_number(value: float, digits: int = 3) -> str:
    """`digits` decimals; a non-zero value that would round to zero keeps two significant digits ('-0.00023')."""
    if value != 0 and abs(value) < 0.5 * 10 ** -digits:
        return f"{value:.2g}"
    return f"{value + 0.0:.{digits}f}"  # + 0.0: no '-0.000' from a negative zero


def format_ci(value, lo, hi, digits: int = 3) -> str:
    """'2.31 [2.25, 2.38]' (no interval when the bounds are missing; '—' for a missing value)."""
    if is_missing(value):
        return "—"
    if lo is None or hi is None or np.isnan(lo) or np.isnan(hi):
        return format_number(value, digits)
    return f"{format_number(value, digits)} [{format_number(lo, digits)}, {format_number(hi, digits)}]"


def ci_pivot(df: pd.DataFrame, index, columns, digits: int = 3) -> pd.DataFrame:
    """Pivot rows into a table of 'value [ci_low, ci_high]' strings (mean over duplicates such as seeds); a value of
    a destroyed subset or point is marked '(destroyed)', a missing value shows its status where it has one."""
    df = df.assign(destroyed=df["destroyed"] if "destroyed" in df else None, status=df["status"] if "status" in df else None)
    g = df.groupby(list(np.atleast_1d(index)) + list(np.atleast_1d(columns)), sort=False, dropna=False)
    agg = g.agg(value=("value", "mean"), lo=("ci_low", "min"), hi=("ci_high", "max"),
                destroyed=("destroyed", lambda d: bool(d.fillna(False).astype(bool).any())),
                status=("status", lambda s: next(iter(s.dropna()), None))).reset_index()
    agg["cell"] = [(format_ci(v, lo, hi, digits) + (" (destroyed)" if gone else "")) if not pd.isna(v)
                   else (status or "—") for v, lo, hi, gone, status in zip(agg.value, agg.lo, agg.hi, agg.destroyed,
                                                                           agg.status)]
    return agg.pivot(index=index, columns=columns, values="cell").fillna("—")
