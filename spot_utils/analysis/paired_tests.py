"""Paired statistics of the ablation results: code and general-text rises with intervals, selectivity, every mask
against the reference control (random_uniform) of its configuration on the same items, and the damage-matched
comparison; each against every general-text reference, under the destroyed rule (analysis.destroyed: destroyed and
collapsed points have no comparison, kept points' losses enter capped at ln |V|), seeded masks pooled over their
seeds, and every p-value metric Holm-corrected as one family over the run (docs/METHOD.md, Statistical tests;
Damage-matched comparison; Destroyed points)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pandas as pd

from . import matched, stats
from ..measure.metric_groups import METRIC_GROUPS
from ..method.mask_kinds import REFERENCE_CONTROL, is_control
from .destroyed import CODE_COLLAPSE, DESTROYED, capped, code_destroyed, code_loss, loss_ratio, point_status
from .metric_names import (CODE_RISE, GENERAL_RISE, LOSS_OVER_UNIFORM, MATCHED_EXCESS, MATCHED_EXCESS_ANY_SUBSET,
                           MDE_MATCHED_EXCESS, MDE_SELECTIVITY_MINUS_REFERENCE, P_MATCHED_EXCESS,
                           P_MATCHED_EXCESS_ANY_SUBSET, P_PLACEBO_MATCHED_EXCESS, P_SELECTIVITY_VS_REFERENCE, P_WILCOXON,
                           PLACEBO_FALSE_POSITIVE_RATE, PLACEBO_MATCHED_EXCESS, SELECTIVITY,
                           SELECTIVITY_MINUS_REFERENCE, derived_metrics, holm_name)
from .rows import row

MIN_WILCOXON_ITEMS = 6  # below this a signed-rank test cannot reach p < 0.05 (two-sided, exact: 2 / 2^n)


def _by_subset(frame: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {s: g.sort_values("item")[column].to_numpy(dtype=float) for s, g in frame.groupby("subset", sort=False)}


def rise_rows(items: pd.DataFrame, baseline: pd.DataFrame, code_subsets, references, labels: dict, vocab: int,
              threshold: float = 0.01, n_boot: int = 1000, parts: dict | None = None) -> list[dict]:
    """code_rise (mean r over code subsets, subset 'code'; `destroyed` when code is under the median rule,
    destroyed.code_destroyed), and per reference general_rise (r on the reference; status destroyed.point_status:
    `destroyed` when the reference is, `code_collapse` when code is and the reference is not) and selectivity
    (code_rise / general_rise where both exceed `threshold`), with bootstrap intervals; then every derived metric of
    the metric-name table (metric_names.derived_metrics) per reference; selectivity or a derived metric of a point
    that is not kept has no value (its status says why). Where code is kept, its subsets enter capped at ln |V|
    (destroyed.capped); a collapsed or destroyed point's rises are as measured. loss_over_uniform: the median code
    loss (subset 'code') and each reference's mean loss as multiples of ln |V|. parts (e.g. {"scored": [...],
    "unseen": [...]}): code_rise of each part too (subset 'code:<part>')."""
    abl, base = _by_subset(items, "loss"), _by_subset(baseline, "loss")
    code = [s for s in code_subsets if s in abl]
    references = [r for r in references if r in abl]
    code_gone = code_destroyed(abl, code, vocab)
    read = abl if code_gone else capped(abl, code, vocab)  # a kept reference is below ln |V|: nothing to cap
    rows = [row(metric=LOSS_OVER_UNIFORM, subset="code", value=loss_ratio(code_loss(abl, code), vocab), n=len(code),
                destroyed=code_gone, **labels)]
    for i, ref in enumerate(references):
        ci = stats.rises_ci(read, base, code, ref, n_boot=n_boot)
        (code_rise, c_lo, c_hi), (general_rise, g_lo, g_hi) = ci["code"], ci["general"]
        status = point_status(abl, code, ref, vocab)
        gone = status == DESTROYED
        if i == 0:  # the code rise and its interval do not depend on the reference
            rows.append(row(metric=CODE_RISE, subset="code", value=code_rise, n=len(code), ci_low=c_lo,
                            ci_high=c_hi, destroyed=code_gone, **labels))
        rows.append(row(metric=GENERAL_RISE, subset=ref, reference=ref, value=general_rise, n=len(abl[ref]),
                        ci_low=g_lo, ci_high=g_hi, destroyed=gone, status=status, **labels))
        rows.append(row(metric=LOSS_OVER_UNIFORM, subset=ref, reference=ref, n=len(abl[ref]), destroyed=gone,
                        value=loss_ratio(float(np.mean(abl[ref])), vocab), status=status, **labels))
        sel = stats.selectivity(code_rise, general_rise, threshold)
        if status is not None:
            rows.append(row(metric=SELECTIVITY, subset=f"code/{ref}", reference=ref, value=None, n=len(code),
                            destroyed=gone, status=status, **labels))
        elif not np.isnan(sel):
            rows.append(row(metric=SELECTIVITY, subset=f"code/{ref}", reference=ref, value=sel, n=len(code),
                            destroyed=False, **labels))
        for name, metric in derived_metrics().items():
            rows.append(row(metric=name, subset=f"code/{ref}", reference=ref, n=len(code), destroyed=gone,
                            value=None if status else float(metric.derive(read, base, code, ref)),
                            status=status, **labels))
    for part, members in (parts or {}).items():
        members = [s for s in members if s in abl]
        if members and references:
            value, lo, hi = stats.rises_ci(read, base, members, references[0], n_boot=n_boot)["code"]
            rows.append(row(metric=CODE_RISE, subset=f"code:{part}", value=value, n=len(members), ci_low=lo,
                            ci_high=hi, destroyed=code_destroyed(abl, members, vocab), **labels))
    return rows


def pair_status(ablated: dict, reference: dict, code, general: str, vocab: int) -> str | None:
    """The status of a comparison of two points (a mask and random_uniform) against one reference: `destroyed` where
    either point is, else `code_collapse` where either point's code collapses, else None (both kept)."""
    statuses = {point_status(ablated, code, general, vocab), point_status(reference, code, general, vocab)}
    return DESTROYED if DESTROYED in statuses else CODE_COLLAPSE if CODE_COLLAPSE in statuses else None


def group_key(labels: dict) -> tuple:
    """What identifies a point apart from its seed: configuration, mask kind, k, n (outlier masks) and mode."""
    return (labels.get("configuration"), labels["mask_kind"], labels.get("k_percent"),
            labels["n_entries"] if labels["mask_kind"] == "top_entries" else None, labels.get("mode", "zero"))


def pooled_results(results) -> list[tuple[dict, dict, list]]:
    """(labels without seed, {group: per-item frame averaged over seeds item by item}, seeds) per group_key of the
    ablated entries: a control with several seeds becomes one seed-pooled point."""
    members = defaultdict(list)
    for labels, frames in results:
        if labels["mask_kind"] != "baseline":
            members[group_key(labels)].append((labels, frames))
    out = []
    for entries in members.values():
        labels = dict(entries[0][0])
        seeds = [lab.get("seed") for lab, _ in entries]
        if is_control(labels["mask_kind"]):  # a seeded control: its seeds pooled
            labels["seed"] = None
        groups = set.intersection(*(set(f) for _, f in entries))
        frames = {g: pd.concat([f[g] for _, f in entries]).groupby(["subset", "item"], sort=False)
                  .mean(numeric_only=True).reset_index() if len(entries) > 1 else entries[0][1][g] for g in groups}
        out.append((labels, frames, seeds))
    return out


def _reference_key(labels: dict) -> tuple:
    return labels.get("configuration"), labels.get("k_percent")


def paired_rows(results, baseline: dict, code_subsets, references, vocab: int, n_boot: int = 1000,
                parts: dict | None = None, matched_boot: int = 10_000) -> list[dict]:
    """Every comparison of the ablation results, against each general-text reference (`references`: one subset
    name or a list):

    * per entry (each seed apart): rise_rows;
    * per seed-pooled point (pooled_results) against random_uniform of the same configuration and k (pooled over
      its seeds): selectivity_minus_reference with a paired bootstrap interval, p-value and smallest detectable
      difference (none where either point is not kept: pair_status), and a Wilcoxon signed-rank p-value
      per subset and item metric where a subset has at least MIN_WILCOXON_ITEMS items;
    * matched_rows, the damage-matched comparison.

    The p-values are Holm-corrected within each family, i.e. each p-value metric over all masks, configurations,
    references and subsets of the run (metric p_holm_*)."""
    references = [references] if isinstance(references, str) else list(references)
    rows = []
    for labels, frames in results:
        if labels["mask_kind"] != "baseline" and "loss" in frames:
            rows += rise_rows(frames["loss"], baseline["loss"], code_subsets, references, labels, vocab,
                              n_boot=n_boot, parts=parts)
    pooled = pooled_results(results)
    refs = {_reference_key(lab): f for lab, f, _ in pooled if lab["mask_kind"] == REFERENCE_CONTROL
            and lab.get("mode", "zero") == "zero"}
    base = _by_subset(baseline["loss"], "loss")
    for labels, frames, _ in pooled:
        ref = refs.get(_reference_key(labels))
        if ref is None or labels["mask_kind"] == REFERENCE_CONTROL:
            continue
        ref_labels = dict(labels, control_of=REFERENCE_CONTROL)
        if "loss" in frames and "loss" in ref:
            abl, r = _by_subset(frames["loss"], "loss"), _by_subset(ref["loss"], "loss")
            code = [s for s in code_subsets if s in abl]
            for general in [g for g in references if g in abl]:
                where = dict(subset=f"code/{general}", reference=general, n=len(code))
                status = pair_status(abl, r, code, general, vocab)
                if status is not None:
                    rows.append(row(metric=SELECTIVITY_MINUS_REFERENCE, value=None, destroyed=status == DESTROYED,
                                    status=status, **where, **ref_labels))
                    continue
                res = stats.selectivity_vs_reference(capped(abl, code, vocab), capped(r, code, vocab), base, code,
                                                     general, n_boot=n_boot)
                if not np.isnan(res["diff"]):
                    rows.append(row(metric=SELECTIVITY_MINUS_REFERENCE, value=res["diff"], ci_low=res["ci_low"],
                                    ci_high=res["ci_high"], destroyed=False, **where, **ref_labels))
                    rows.append(row(metric=P_SELECTIVITY_VS_REFERENCE, value=res["p"], **where, **ref_labels))
                    if not np.isnan(res["se"]):
                        rows.append(row(metric=MDE_SELECTIVITY_MINUS_REFERENCE,
                                        value=matched.minimal_detectable_effect(res["se"]), **where, **ref_labels))
        for group, frame in frames.items():
            if group not in ref or group == "generation":  # pass/fail: analysis.generation tests it
                continue
            group_ = METRIC_GROUPS.pick(group)
            for metric in group_.item_metrics[:1] if group_.loss_like else group_.item_metrics:
                a, r = _by_subset(frame, metric), _by_subset(ref[group], metric)
                for subset in a:
                    if len(a[subset]) >= MIN_WILCOXON_ITEMS:
                        rows.append(row(metric=P_WILCOXON + metric, subset=subset, n=len(a[subset]),
                                        value=stats.wilcoxon_p(a[subset], r[subset]), **ref_labels))
    rows += matched_rows(results, baseline, code_subsets, references, vocab, n_boot=matched_boot)
    for metric in dict.fromkeys(r["metric"] for r in rows if r["metric"].startswith("p_")):
        family = [r for r in rows if r["metric"] == metric]
        for r, adj in zip(family, stats.holm([r["value"] for r in family])):
            rows.append(dict(r, metric=holm_name(metric), value=float(adj)))
    return rows


def matched_rows(results, baseline: dict, code_subsets, references, vocab: int, n_boot: int = 10_000,
                 seed: int = 0) -> list[dict]:
    """The damage-matched comparison (matched.matched_excess), per configuration and reference: every zero-mode
    point of the configuration (seeded masks pooled over their seeds, and, where a control has several seeds at a
    point, each seed apart for the seed spread; random_uniform's own seeds against its pooled curve) against
    random_uniform's curve of the configuration.
    Rows: matched_excess (subset 'code/<reference>', control_of random_uniform; status 'destroyed', 'code_collapse',
    'outside_random_range' or 'no_random_curve' and no value where it has none), and for the pooled points
    p_matched_excess and mde_matched_excess (the smallest difference detectable at α = 0.05 with power 0.8), all
    under the median destroyed rule; then, for the pooled points, the same comparison under the old any-subset rule
    (destroyed.RULES "any"): matched_excess_any_subset (value, interval, status) and p_matched_excess_any_subset,
    from which a reader states whether a verdict depends on the rule (tables.sensitivity)."""
    references = [references] if isinstance(references, str) else list(references)
    base = _by_subset(baseline["loss"], "loss")
    code = [s for s in code_subsets if s in base]
    zero = [(lab, f) for lab, f in results if lab["mask_kind"] != "baseline" and lab.get("mode", "zero") == "zero"
            and "loss" in f]
    pooled = pooled_results(zero)
    rows = []
    for configuration in dict.fromkeys(lab.get("configuration") for lab, _ in zero):
        random, random_seeds = defaultdict(list), defaultdict(list)
        for lab, f in zero:
            if lab.get("configuration") == configuration and lab["mask_kind"] == REFERENCE_CONTROL:
                random[lab["k_percent"]].append(_by_subset(f["loss"], "loss"))
                random_seeds[lab["k_percent"]].append(lab.get("seed"))
        if not random:
            continue
        per_seed = defaultdict(list)  # group -> every seed's item losses (a seeded control's point is their mean)
        for lab, f in zero:
            per_seed[group_key(lab)].append(_by_subset(f["loss"], "loss"))
        points = {}  # key -> (labels, item losses (a list per seed for a seed-pooled point), pooled?)
        for lab, f, _ in pooled:
            if lab.get("configuration") == configuration and lab["mask_kind"] != REFERENCE_CONTROL:
                points[("pooled", len(points))] = (lab, per_seed[group_key(lab)], True)
        for lab, f in zero:  # the seed spread: every seed of a control (other than the curve's) measured with several
            if (lab.get("configuration") == configuration and is_control(lab["mask_kind"])
                    and lab["mask_kind"] != REFERENCE_CONTROL and len(per_seed[group_key(lab)]) > 1):
                points[("seed", len(points))] = (lab, _by_subset(f["loss"], "loss"), False)
        for general in [g for g in references if g in base]:
            out = matched.matched_excess(base, {key: losses for key, (_, losses, _) in points.items()}, dict(random),
                                         code, general, vocab, n_boot=n_boot, seed=seed)
            rows += placebo_rows(base, dict(random), random_seeds, code, general, vocab, configuration, n_boot=n_boot,
                                 seed=seed)
            pooled_points = {key: losses for key, (_, losses, is_pooled) in points.items() if is_pooled}
            for res in matched.matched_excess(base, pooled_points, dict(random), code, general, vocab, n_boot=n_boot,
                                              seed=seed, rule="any"):
                labels = dict(points[res["key"]][0], control_of=REFERENCE_CONTROL, reference=general)
                where = dict(subset=f"code/{general}", n=res["n"])
                rows.append(row(metric=MATCHED_EXCESS_ANY_SUBSET, value=res["value"], ci_low=res["ci_low"],
                                ci_high=res["ci_high"], destroyed=res["destroyed"], status=res["status"], **where,
                                **labels))
                if res["p"] is not None:
                    rows.append(row(metric=P_MATCHED_EXCESS_ANY_SUBSET, value=res["p"], **where, **labels))
            for res in out:
                lab, _, is_pooled = points[res["key"]]
                labels = dict(lab, control_of=REFERENCE_CONTROL, reference=general)
                where = dict(subset=f"code/{general}", n=res["n"])
                rows.append(row(metric=MATCHED_EXCESS, value=res["value"], ci_low=res["ci_low"], ci_high=res["ci_high"],
                                destroyed=res["destroyed"], status=res["status"], **where, **labels))
                if is_pooled and res["p"] is not None:
                    rows.append(row(metric=P_MATCHED_EXCESS, value=res["p"], **where, **labels))
                if is_pooled and res["mde"] is not None:
                    rows.append(row(metric=MDE_MATCHED_EXCESS, value=res["mde"], **where, **labels))
    return rows


def placebo_rows(base, random, seed_labels, code, general, vocab, configuration, n_boot, seed) -> list[dict]:
    """The placebo check of the damage-matched comparison (matched.placebo) as rows: per random_uniform seed at a k
    of several seeds, its matched excess against the other seeds' curve (metric `placebo_matched_excess`, with
    `p_placebo_matched_excess`), and the share called significant at α = 0.05 (metric
    `placebo_false_positive_rate`, a fraction with its Clopper–Pearson interval, n = the seeds compared)."""
    out = matched.placebo(base, random, code, general, vocab, n_boot=n_boot, seed=seed)
    where = dict(subset=f"code/{general}", configuration=configuration, mask_kind=REFERENCE_CONTROL,
                 control_of=REFERENCE_CONTROL, reference=general, mode="zero")
    rows = []
    for r in out["rows"]:
        labels = dict(where, k_percent=r["k"], seed=seed_labels[r["k"]][r["seed_index"]], n=r["n"])
        rows.append(row(metric=PLACEBO_MATCHED_EXCESS, value=r["value"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                        status=r["status"], **labels))
        if r["p"] is not None:
            rows.append(row(metric=P_PLACEBO_MATCHED_EXCESS, value=r["p"], **labels))
    if out["rows"]:
        rows.append(row(metric=PLACEBO_FALSE_POSITIVE_RATE, value=out["rate"], ci_low=out["ci_low"],
                        ci_high=out["ci_high"], n=out["n"], **where,
                        status=None if out["n"] else "no_seed_inside_the_others_curve"))
    return rows
