"""Running the ablation experiment on one item set: the baseline, then every (labels, masks) entry ablated in place
(restored on exit) and measured by the metric groups the plan gives it, as tidy rows; the cross-ablation matrix
goes through the same loop (docs/METHOD.md, Ablation)."""
from __future__ import annotations

import pandas as pd

from . import stats
from .ablation import ablated
from .ablation_plan import plan_metrics, run_labels
from .masks import mask_count
from .metric_groups import METRIC_GROUPS, Evaluators
from .metrics import loss_rows, row
from .structure import summary


def ablate_and_evaluate(model, entries, evaluators: Evaluators, params: dict, baseline: dict | None = None):
    """Evaluate (labels, masks) entries, each ablated in its mode (a baseline entry first if `baseline` is None).

    Returns (rows, results, baseline): results is a list of (labels, {group: per-item frame}) for the paired
    tests; baseline is the unablated {group: frame}.
    """
    from tqdm.auto import tqdm
    results, rows = [], []
    if baseline is None:
        base_labels = run_labels(params, mask_kind="baseline")
        baseline = evaluators(plan_metrics(base_labels, params))
        results.append((base_labels, baseline))
        rows += frame_rows(baseline, None, base_labels, params["bootstrap_samples"])
    for labels, masks in tqdm(list(entries), desc="masks", leave=False):
        labels = dict(labels, mode=labels.get("mode") or "zero")
        labels.setdefault("n_entries", mask_count(masks))
        with ablated(model, masks, mode=labels["mode"], seed=labels.get("seed") or 0):
            frames = evaluators(plan_metrics(labels, params))
        results.append((labels, frames))
        rows += frame_rows(frames, baseline, labels, params["bootstrap_samples"]) + mask_rows(labels, masks)
    return rows, results, baseline


def frame_rows(frames: dict[str, pd.DataFrame], baseline: dict | None, labels: dict, n_boot: int = 1000) -> list[dict]:
    """Tidy rows of every metric group: loss-like groups through loss_rows (with loss_rise against the
    baseline), the others as means of each item metric with bootstrap intervals."""
    rows = []
    for group, frame in frames.items():
        if METRIC_GROUPS.pick(group).loss_like:
            rows += loss_rows(frame, None if baseline is None else baseline.get(group), **labels)
            continue
        for subset, g in frame.groupby("subset", sort=False):
            for metric in METRIC_GROUPS[group].item_metrics:
                v = g.sort_values("item")[metric].to_numpy(dtype=float)
                lo, hi = stats.mean_ci(v, n_boot=n_boot)
                rows.append(row(metric=metric, subset=subset, value=float(v.mean()), n=len(v), ci_low=lo, ci_high=hi,
                                **labels))
    return rows


def mask_rows(labels: dict, masks: dict) -> list[dict]:
    """Size of a mask and the share of it in norm vectors and biases (subset 'parameters')."""
    s = summary(masks)
    return [row(metric="n_selected", subset="parameters", value=s["total"], **labels),
            row(metric="vector_share", subset="parameters", value=s["vector_share"], n=s["total"], **labels)]


def cross_ablation(model, lang_masks: dict[str, dict], evaluators: Evaluators, params: dict, labels: dict) -> list[dict]:
    """Ablate each language's specific region (selection.iter_regions) and measure the evaluators' subsets
    through ablate_and_evaluate with its own baseline: rows mask_kind 'specific:<lang>' with loss_rise against
    the unablated model on the same items, and the region's size."""
    from .selection import SPECIFIC, iter_regions
    entries = [(dict(labels, mask_kind=kind), masks) for kind, masks in iter_regions(lang_masks)
               if kind.startswith(SPECIFIC)]
    rows, _, _ = ablate_and_evaluate(model, entries, evaluators, params)
    return [r for r in rows if r["mask_kind"] != "baseline" and r["metric"] in ("loss_rise", "n_selected",
                                                                                  "vector_share")]
