"""Comparing runs (models): which runs hold a mask, and the global spot's summary and profiles across runs."""
from __future__ import annotations

from pathlib import Path
import warnings

import pandas as pd

from ..analysis.metric_names import CODE_RISE, GENERAL_RISE
from ..base.io import read_json
from ..base.paths import REPORTS_DIR, RUNS_DIR
from ..base.run_files import mask_path
from ..method import structure
from ..method.masks import load_masks
from .headline import run_headline


def runs_with_mask(kind: str, k_percent: float, granularity: str = "global", exclude: str | None = None,
                   runs_dir: str | Path = RUNS_DIR) -> dict[str, Path]:
    """{run name: mask path} of every run folder in runs/ that holds the mask `kind` at k (e.g. 'spot', 1.0)."""
    found = {}
    root = Path(runs_dir)
    if root.is_dir():
        for run in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != exclude):
            path = mask_path(run, kind, k_percent, granularity, root=root)
            if path.is_file():
                found[run] = path
    return found


def cross_model(run_names: list[str], k_percent: float, runs_dir: str | Path = RUNS_DIR,
                reports_dir: str | Path = REPORTS_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare the global spot at k across runs (models): (one summary row per run, module and depth profiles
    labelled 'run (model)'). A run after the first whose masks fail verification is left out with a warning.

    Summary: model, spot entries, share in norm/bias vectors, shared core and union of the per-language top-k,
    and the code / general loss rise at 1% of the spot and of random_uniform where the run's metrics.json has them.
    """
    rows, spots = [], {}
    for i, run in enumerate(run_names):
        try:
            spot, manifest = load_masks(mask_path(run, "spot", k_percent, root=runs_dir))
            totals = {region: load_masks(path)[1]["total"] if path.is_file() else None for region, path in
                      ((r, mask_path(run, r, k_percent, root=runs_dir)) for r in ("shared", "union"))}
        except ValueError as e:
            if i == 0:
                raise
            warnings.warn(f"run {run!r} left out of the comparison across models: its masks cannot be verified ({e})")
            continue
        row = dict(run=run, model=manifest.get("model"), **{f"spot_{k}": v for k, v in structure.summary(spot).items()},
                   **totals)
        row["shared_over_union"] = row["shared"] / row["union"] if row["shared"] is not None and row["union"] else None
        metrics_path = Path(reports_dir) / run / "metrics.json"
        h = run_headline(read_json(metrics_path), 1.0) if metrics_path.is_file() else {}
        for kind in ("spot", "random_uniform"):  # the collapse at 1%, beside random damage of the same size
            row[f"{kind}_{CODE_RISE}_at_1pct"] = h.get(f"{kind}.{CODE_RISE}")
            row[f"{kind}_{GENERAL_RISE}_at_1pct"] = h.get(f"{kind}.{GENERAL_RISE}")
        rows.append(row)
        spots[f"{run} ({row['model']})" if row["model"] and row["model"] != run else run] = spot
    profiles = pd.concat([structure.profile(spots, "module").assign(by="module"),
                          structure.profile(spots, "depth").assign(by="depth")], ignore_index=True)
    return pd.DataFrame(rows), profiles
