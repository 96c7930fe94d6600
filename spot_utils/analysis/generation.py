"""Executed pass@1 of the ablation results: per-problem outcomes for the report folder, and paired tests per mask,
an exact McNemar test against the baseline and a sign-flip permutation test against random_uniform's per-problem
pass rate averaged over its seeds (docs/METHOD.md, Statistical tests)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..base.io import atomic_path
from ..method.mask_kinds import REFERENCE_CONTROL
from . import stats
from .paired_tests import pooled_results
from .rows import row

GROUP, METRIC = "generation", "pass@1"
LABELS = ("configuration", "k_percent", "mask_kind", "seed", "mode", "n_entries")


def generation_outcomes(results) -> pd.DataFrame:
    """One row per (entry, subset, problem) of every result that ran the generation group: the entry's labels,
    task_id, pass@1, status and the completion."""
    frames = [frames[GROUP].assign(**{k: labels.get(k) for k in LABELS})
              for labels, frames in results if GROUP in frames]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_generation_outcomes(path, results) -> int:
    """Write generation_outcomes as JSON lines atomically (beside metrics.json); returns the number of rows."""
    table = generation_outcomes(results)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in table.to_dict("records"):
            f.write(json.dumps({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in rec.items()})
                    + "\n")
    return len(table)


def _passes(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {s: g.sort_values("item")[METRIC].to_numpy(dtype=float) for s, g in frame.groupby("subset", sort=False)}


def generation_test_rows(results, baseline: dict, n_perm: int = 10_000) -> list[dict]:
    """Per ablated entry and subset: p_mcnemar_pass@1 against the baseline (value: exact two-sided p; n: the
    discordant problems); per seed-pooled point: p_permutation_pass@1 against random_uniform of the same
    configuration and k, pooled over its seeds (value: p; n: problems). Entries not generated (pass@1 NaN) get
    no test. Each p-value metric is Holm-corrected over its rows (p_holm_...)."""
    if GROUP not in baseline:
        return []
    base = _passes(baseline[GROUP])
    rows = []
    for labels, frames in results:
        if labels["mask_kind"] == "baseline" or GROUP not in frames:
            continue
        for subset, a in _passes(frames[GROUP]).items():
            if subset in base and not np.isnan(a).any():
                res = stats.mcnemar_exact(a, base[subset])
                rows.append(row(metric=f"p_mcnemar_{METRIC}", subset=subset, value=res["p"],
                                n=res["only_a"] + res["only_b"], control_of="baseline",
                                **{k: labels.get(k) for k in LABELS}))
    pooled = pooled_results(results)
    refs = {(lab.get("configuration"), lab.get("k_percent")): f for lab, f, _ in pooled
            if lab["mask_kind"] == REFERENCE_CONTROL and lab.get("mode", "zero") == "zero" and GROUP in f}
    for labels, frames, _ in pooled:
        ref = refs.get((labels.get("configuration"), labels.get("k_percent")))
        if ref is None or labels["mask_kind"] == REFERENCE_CONTROL or GROUP not in frames:
            continue
        r = _passes(ref[GROUP])
        for subset, a in _passes(frames[GROUP]).items():
            if subset in r and not np.isnan(a).any() and not np.isnan(r[subset]).any():
                rows.append(row(metric=f"p_permutation_{METRIC}", subset=subset, n=len(a), control_of=REFERENCE_CONTROL,
                                value=stats.paired_permutation_p(a, r[subset], n_perm=n_perm),
                                **{k: labels.get(k) for k in LABELS}))
    for metric in dict.fromkeys(r["metric"] for r in rows):
        family = [r for r in rows if r["metric"] == metric]
        for r, adj in zip(family, stats.holm([r["value"] for r in family])):
            rows.append(dict(r, metric=metric.replace("p_", "p_holm_", 1), value=float(adj)))
    return rows
