"""Paired statistics of the ablation results: code and general-text rises with intervals, selectivity, and every
mask against the reference control (random_uniform) on the same items, Holm-corrected per family
(docs/METHOD.md, Statistical tests)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from . import stats
from .ablation import REFERENCE_CONTROL
from .metric_groups import METRIC_GROUPS
from .metrics import row


def selectivity_rows(items: pd.DataFrame, baseline: pd.DataFrame, code_subsets, general_subset: str,
                     labels: dict, threshold: float = 0.01, n_boot: int = 1000, parts: dict | None = None) -> list[dict]:
    """code_rise (mean r over code subsets, subset 'code'), general_rise (r on the general subset), with
    bootstrap intervals, and their ratio (selectivity), reported only when both rises exceed `threshold`
    (docs/METHOD.md, Statistical tests). parts (e.g. {"scored": [...], "unseen": [...]}): code_rise of each part too (subset 'code:<part>')."""
    abl, base = _by_subset(items, "loss"), _by_subset(baseline, "loss")
    code = [s for s in code_subsets if s in abl]
    ci = stats.rises_ci(abl, base, code, general_subset, n_boot=n_boot)
    (code_rise, c_lo, c_hi), (general_rise, g_lo, g_hi) = ci["code"], ci["general"]
    rows = [row(metric="code_rise", subset="code", value=code_rise, n=len(code), ci_low=c_lo, ci_high=c_hi, **labels),
            row(metric="general_rise", subset=general_subset, value=general_rise, n=len(abl[general_subset]),
                ci_low=g_lo, ci_high=g_hi, **labels)]
    sel = stats.selectivity(code_rise, general_rise, threshold)
    if not np.isnan(sel):
        rows.append(row(metric="selectivity", subset=f"code/{general_subset}", value=sel, n=len(code), **labels))
    for part, members in (parts or {}).items():
        members = [s for s in members if s in abl]
        if members:
            value, lo, hi = stats.rises_ci(abl, base, members, general_subset, n_boot=n_boot)["code"]
            rows.append(row(metric="code_rise", subset=f"code:{part}", value=value, n=len(members), ci_low=lo,
                            ci_high=hi, **labels))
    return rows


def _by_subset(frame: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {s: g.sort_values("item")[column].to_numpy() for s, g in frame.groupby("subset", sort=False)}


def _key(labels: dict) -> tuple:
    return labels.get("k_percent"), labels.get("granularity")


def reference_frames(results) -> dict[tuple, dict[str, pd.DataFrame]]:
    """The reference control's per-item frames at each (k, granularity), averaged over its seeds item by item."""
    acc = defaultdict(lambda: defaultdict(list))
    for labels, frames in results:
        if labels["mask_kind"] == REFERENCE_CONTROL and labels.get("mode", "zero") == "zero":
            for g, f in frames.items():
                acc[_key(labels)][g].append(f)
    out = {}
    for key, groups in acc.items():
        out[key] = {g: pd.concat(fs).groupby(["subset", "item"], sort=False).mean(numeric_only=True).reset_index()
                    for g, fs in groups.items()}
    return out


def paired_rows(results, baseline: dict, code_subsets, general_subset: str, n_boot: int = 1000,
                parts: dict | None = None) -> list[dict]:
    """Against the reference control (random_uniform) of the same k and granularity (mean over its seeds), for
    every other mask:
    selectivity rows (code/general rises with intervals, selectivity), the selectivity difference with a
    paired bootstrap interval and p-value, and a Wilcoxon signed-rank p-value per subset and item metric.
    The p-values are Holm-corrected within each family, i.e. each p-value metric over all masks (and
    subsets) of the run: the selectivity tests together, each Wilcoxon metric together (metric p_holm_*)."""
    refs = reference_frames(results)
    rows = []
    for labels, frames in results:
        if labels["mask_kind"] == "baseline":
            continue
        if "loss" in frames:
            rows += selectivity_rows(frames["loss"], baseline["loss"], code_subsets, general_subset, labels,
                                     n_boot=n_boot, parts=parts)
        ref = refs.get(_key(labels))
        if ref is None or labels["mask_kind"] == REFERENCE_CONTROL:
            continue
        ref_labels = dict(labels, control_of=REFERENCE_CONTROL)
        if "loss" in frames and "loss" in ref:
            abl, r, b = (_by_subset(f, "loss") for f in (frames["loss"], ref["loss"], baseline["loss"]))
            code = [s for s in code_subsets if s in abl]
            res = stats.selectivity_vs_reference(abl, r, b, code, general_subset, n_boot=n_boot)
            if not np.isnan(res["diff"]):
                rows.append(row(metric="selectivity_minus_reference", subset=f"code/{general_subset}",
                                value=res["diff"], ci_low=res["ci_low"], ci_high=res["ci_high"], n=len(code),
                                **ref_labels))
                rows.append(row(metric="p_selectivity_vs_reference", subset=f"code/{general_subset}", value=res["p"],
                                **ref_labels))
        for group, frame in frames.items():
            if group not in ref:
                continue
            group_ = METRIC_GROUPS.pick(group)
            for metric in group_.item_metrics[:1] if group_.loss_like else group_.item_metrics:
                a, r = _by_subset(frame, metric), _by_subset(ref[group], metric)
                for subset in a:
                    rows.append(row(metric=f"p_wilcoxon_{metric}", subset=subset, value=stats.wilcoxon_p(a[subset], r[subset]),
                                    n=len(a[subset]), **ref_labels))
    for metric in dict.fromkeys(r["metric"] for r in rows if r["metric"].startswith("p_")):
        family = [r for r in rows if r["metric"] == metric]
        for r, adj in zip(family, stats.holm([r["value"] for r in family])):
            rows.append(dict(r, metric=metric.replace("p_", "p_holm_", 1), value=float(adj)))
    return rows
