"""Reading the ablation rows: the rise curves' frame, the damage-matched comparison's table, figure frame and
verdicts (stated only where the general-text references agree, each with its sensitivity to the destroyed rule),
the table of rises and selectivity at one k, where code collapses while general text holds (the destroyed rule's
code_collapse status), the norm and bias entries of each mask, and where the outlier entries sit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.destroyed import CODE_COLLAPSE, COLLAPSE_LABEL, DEFAULT_RULE, DESTROYED
from ..analysis.metric_names import (CODE_RISE, GENERAL_RISE, LOSS_OVER_UNIFORM, MATCHED_EXCESS,
                                     MATCHED_EXCESS_ANY_SUBSET, MDE_MATCHED_EXCESS, P_HOLM_MATCHED_EXCESS,
                                     P_HOLM_MATCHED_EXCESS_ANY_SUBSET, P_HOLM_SELECTIVITY_VS_REFERENCE, SELECTIVITY,
                                     SELECTIVITY_MINUS_REFERENCE, VECTOR_SHARE)
from ..analysis.rows import ci_pivot, format_ci, format_rise, to_frame
from ..data.sources import PROSE_LABELS
from ..method.mask_kinds import OUTLIERS, REFERENCE_CONTROL
from ..method.structure import distribution

ALPHA = 0.05  # level of every verdict below (Holm-adjusted p-values)
VERDICTS = {"more": "hurts code more than random damage that hurts {ref} equally",
            "less": "hurts code less than random damage that hurts {ref} equally",
            "none": "is not distinguishable from random damage that hurts {ref} equally",
            "mixed": "hurts code more than equal random damage at some k and less at others (against {ref})",
            "no point": "has no point comparable with random damage against {ref}"}
RULE_METRICS = {"median": (MATCHED_EXCESS, P_HOLM_MATCHED_EXCESS),  # destroyed rule -> its matched-excess rows
                "any": (MATCHED_EXCESS_ANY_SUBSET, P_HOLM_MATCHED_EXCESS_ANY_SUBSET)}
STATUS_WORDS = {DESTROYED: "destroyed", CODE_COLLAPSE: COLLAPSE_LABEL, "outside_random_range": "beyond random_uniform's reach"}


def status_words(status) -> str:
    """How a sentence names a point's status: 'destroyed', 'code collapses, general text intact', ..."""
    return STATUS_WORDS.get(status, str(status).replace("_", " "))


def _point_status(statuses: pd.Series):
    """One status for a point from its rows (seeds, references): destroyed where any is, else code_collapse where any
    is, else None."""
    values = set(statuses.dropna())
    return DESTROYED if DESTROYED in values else CODE_COLLAPSE if CODE_COLLAPSE in values else None


def curve_kinds(kind: str) -> tuple[str, ...]:
    """The mask kinds whose points make up a kind's curve: the spot's continues below its k grid through the outlier
    masks (the top n entries of the same aggregate), which are its smallest points."""
    return (kind, OUTLIERS) if kind == "spot" else (kind,)


def reference_label(reference: str) -> str:
    """How tables name a general-text reference: 'literary English', 'modern English prose', ..."""
    return PROSE_LABELS.get(reference, reference)


def _zero(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["mode"].fillna("zero") == "zero"]


def _frame(rows) -> pd.DataFrame:
    return rows if isinstance(rows, pd.DataFrame) else to_frame(rows)


def _point(df: pd.DataFrame) -> pd.Series:
    """'k = 1%' or 'top 10' per row: where a point sits on a mask kind's curve."""
    return pd.Series([f"top {int(n)}" if kind == "top_entries" else f"k = {k:g}%"
                      for kind, k, n in zip(df.mask_kind, df.k_percent, df.n_entries)], index=df.index, dtype=object)


def rise_frame(rows, reference: str | None = None) -> pd.DataFrame:
    """code_rise / general_rise rows (zero mode) per configuration, mask kind and k: mean over seeds, an error bar
    from the lowest interval bound to the highest over seeds (interval and seed spread together) and whether any
    seed's row is destroyed (code_rise: code under the median rule; general_rise: the reference). reference: only
    the general rises measured on it."""
    df = _zero(_frame(rows))
    df = df[df.metric.isin([CODE_RISE, GENERAL_RISE]) & df.k_percent.notna() & ~df.subset.str.startswith("code:")]
    if reference is not None:
        df = df[(df.metric == CODE_RISE) | (df.reference == reference)]
    df = df.assign(configuration=df.configuration.fillna(df.granularity), destroyed=df.destroyed.fillna(False).astype(bool))
    return (df.groupby(["configuration", "mask_kind", "k_percent", "metric"], sort=False)
            .agg(value=("value", "mean"), ci_low=("ci_low", "min"), ci_high=("ci_high", "max"),
                 seeds=("value", "size"), destroyed=("destroyed", "any"))
            .reset_index())


def damage_frame(rows, configuration: str, reference: str) -> pd.DataFrame:
    """Every zero-mode point of a configuration for the damage plot against one reference: general and code rise
    (mean over seeds, which is the seed-pooled point's rise) with their 95% intervals (lowest and highest bound
    over seeds), their range over seeds, its status under the destroyed rule (`status`: None, destroyed or
    code_collapse, from the general_rise rows; `destroyed`, `collapse` and `kept` say the same as booleans), the
    median code loss and the reference's loss as multiples of ln |V| (code_loss, general_loss; NaN in runs without
    loss_over_uniform rows) and whether it is comparable (it has a seed-pooled matched excess: kept and within
    random_uniform's reach)."""
    df = _zero(_frame(rows))
    df = df[df.configuration == configuration]
    df = df.assign(point=_point(df), seed=df.seed.fillna(-1), destroyed=df.destroyed.fillna(False).astype(bool))
    key = ["mask_kind", "point", "seed"]
    code = df[(df.metric == CODE_RISE) & (df.subset == "code")].set_index(key)
    gen = df[(df.metric == GENERAL_RISE) & (df.reference == reference)].set_index(key)
    both = code[["value", "ci_low", "ci_high", "k_percent", "n_entries"]].join(
        gen[["value", "ci_low", "ci_high", "destroyed", "status"]], suffixes=("_c", "_g"), how="inner").reset_index()
    ratio = df[df.metric == LOSS_OVER_UNIFORM]
    for column, where in (("code_loss", ratio.subset == "code"), ("general_loss", ratio.reference == reference)):
        r = ratio[where].groupby(key).value.mean().rename(column)
        both = both.join(r, on=key) if len(r) else both.assign(**{column: np.nan})
    out = (both.groupby(["mask_kind", "point"], sort=False)
           .agg(code_rise=("value_c", "mean"), c_lo=("ci_low_c", "min"), c_hi=("ci_high_c", "max"),
                c_min=("value_c", "min"), c_max=("value_c", "max"), general_rise=("value_g", "mean"),
                g_lo=("ci_low_g", "min"), g_hi=("ci_high_g", "max"), g_min=("value_g", "min"),
                g_max=("value_g", "max"), seeds=("value_c", "size"), status=("status", _point_status),
                code_loss=("code_loss", "mean"), general_loss=("general_loss", "mean"),
                k_percent=("k_percent", "first"), n_entries=("n_entries", "first"))
           .reset_index())
    out = out.assign(destroyed=out.status == DESTROYED, collapse=out.status == CODE_COLLAPSE)
    out["kept"] = ~out.destroyed & ~out.collapse
    own = _frame(rows)
    excess = _pooled_by_point(own[(own.configuration == configuration) & (own.reference == reference)], MATCHED_EXCESS)
    keys = pd.MultiIndex.from_frame(out[["mask_kind", "point"]])
    out["comparable"] = (out.mask_kind != REFERENCE_CONTROL) & excess.reindex(keys).notna().to_numpy()
    return out.sort_values(["mask_kind", "k_percent", "n_entries"]).reset_index(drop=True)


def _pooled_by_point(df: pd.DataFrame, metric: str) -> pd.Series:
    """A seed-pooled metric's value per (mask kind, point)."""
    d = df[(df.metric == metric) & df.seed.isna()]
    return d.assign(point=_point(d)).set_index(["mask_kind", "point"]).value


def matched_table(rows, configuration: str, reference: str) -> pd.DataFrame:
    """The damage-matched comparison of one configuration against one reference, one row per point: code and general
    rise (percent, as in the README), matched excess with its 95% interval, the range of the excess over seeds
    (seeded controls; for random_uniform its own seeds against its seed-pooled curve), the Holm-adjusted p-value,
    the smallest difference the run could detect, and why a value is missing."""
    df = _frame(rows)
    df = df[(df.configuration == configuration) & (df.reference == reference)]
    me = df[df.metric == MATCHED_EXCESS]
    pooled = me[me.seed.isna()]
    pooled = pooled.assign(point=_point(pooled))
    seeded = me[me.seed.notna()]
    spread = seeded.assign(point=_point(seeded)).groupby(["mask_kind", "point"]).value.agg(["min", "max", "count"])
    p, mde = _pooled_by_point(df, P_HOLM_MATCHED_EXCESS), _pooled_by_point(df, MDE_MATCHED_EXCESS)
    rises = damage_frame(rows, configuration, reference).set_index(["mask_kind", "point"])
    points = list(pooled.itertuples()) + [r for r in spread.reset_index().itertuples()
                                          if r.mask_kind == REFERENCE_CONTROL]
    out = []
    for r in points:
        key = (r.mask_kind, r.point)
        own = r.mask_kind == REFERENCE_CONTROL
        cell = "0 (its own curve)" if own else (format_ci(r.value, r.ci_low, r.ci_high) if not pd.isna(r.value)
                                                else status_words(r.status))
        status = rises.status.get(key)
        s = spread.loc[key] if key in spread.index else None
        out.append({"mask kind": r.mask_kind, "point": r.point,
                    "code rise": format_rise(rises.code_rise.get(key)),
                    "general rise": format_rise(rises.general_rise.get(key)),
                    "status": status_words(status) if isinstance(status, str) else "",
                    "matched excess [95% CI]": cell,
                    "over seeds": f"{s['min']:+.3f} … {s['max']:+.3f}" if s is not None and s["count"] > 1 else "—",
                    "p (Holm)": f"{p[key]:.3g}" if key in p.index else "—",
                    "smallest detectable": f"{mde[key]:.3f}" if key in mde.index else "—"})
    return pd.DataFrame(out)


def verdict(rows, configuration: str, reference: str, kind: str = "spot", alpha: float = ALPHA,
            rule: str = DEFAULT_RULE) -> str:
    """One key of VERDICTS for the points of a mask kind's curve (seed-pooled; the spot's include the outlier masks,
    curve_kinds) against one reference, under a destroyed rule (RULE_METRICS: "median" reads matched_excess, "any"
    matched_excess_any_subset): 'more' or 'less' when some point's matched excess is significant (Holm p < alpha)
    with that sign and none with the other, 'mixed' when both occur, 'none' when no point is significant, 'no point'
    when no point has a value."""
    metric, p_metric = RULE_METRICS[rule]
    df = _frame(rows)
    df = df[(df.configuration == configuration) & (df.reference == reference) & df.mask_kind.isin(curve_kinds(kind))]
    values = _pooled_by_point(df, metric).dropna()
    if not len(values):
        return "no point"
    p = _pooled_by_point(df, p_metric)
    signs = {float(np.sign(v)) for key, v in values.items() if key in p.index and p[key] < alpha}
    return "mixed" if signs >= {1.0, -1.0} else "more" if 1.0 in signs else "less" if -1.0 in signs else "none"


def sensitivity(rows, configuration: str, reference: str, kind: str = "spot", alpha: float = ALPHA) -> str | None:
    """Whether a verdict changes under the old any-subset destroyed rule (the matched_excess_any_subset rows): 'Under
    the any-subset rule the verdict is the same.' or 'Under the any-subset rule the verdict would be <v> instead,
    because <point> is destroyed under it.' (the points kept under the median rule that the any rule leaves out,
    with their status under it). None for runs without the any-subset rows."""
    df = _frame(rows)
    df = df[(df.configuration == configuration) & (df.reference == reference) & df.mask_kind.isin(curve_kinds(kind))
            & df.seed.isna()]
    if not (df.metric == MATCHED_EXCESS_ANY_SUBSET).any():
        return None
    now, old = verdict(rows, configuration, reference, kind, alpha), verdict(rows, configuration, reference, kind,
                                                                             alpha, rule="any")
    if now == old:
        return "Under the any-subset rule the verdict is the same."
    status = {rule: df[df.metric == metric].assign(point=lambda d: _point(d)).set_index("point").status
              for rule, (metric, _) in RULE_METRICS.items()}
    changed = [(point, st) for point, st in status["any"].items()
               if isinstance(st, str) and st in (DESTROYED, CODE_COLLAPSE) and pd.isna(status["median"].get(point))]
    because = ("because " + ", ".join(f"{point} is destroyed under it" + ("" if st == DESTROYED else
                                      " (code: a code subset at or above ln |V|)") for point, st in changed)
               if changed else "because its points' matched excesses differ under it (no cap at ln |V|, and "
                               "random_uniform's curve keeps other points)")
    return f"Under the any-subset rule the verdict would be '{old}' instead, {because}."


def collapse_points(rows, configuration: str, reference: str, kind: str = "spot") -> list[str]:
    """The points of a kind's curve whose status against a reference is code_collapse (code collapses, general text
    intact: the outcome a code-specific region predicts), each with its code and general rise and, where the rows
    hold them, the median code loss and the reference's loss as multiples of ln |V|: 'k = 5% (code +850%, literary
    English +100%; median code loss 1.57·ln |V|, literary English 0.74·ln |V|)'."""
    points = damage_frame(rows, configuration, reference)
    points = points[points.collapse & points.mask_kind.isin(curve_kinds(kind))].sort_values(["n_entries"])
    label, out = reference_label(reference), []
    for r in points.itertuples():
        losses = (f"; median code loss {r.code_loss:.2f}·ln |V|, {label} {r.general_loss:.2f}·ln |V|"
                  if not (pd.isna(r.code_loss) or pd.isna(r.general_loss)) else "")
        out.append(f"{r.point} (code {format_rise(r.code_rise)}, {label} {format_rise(r.general_rise)}{losses})")
    return out


def conclusion(rows, configuration: str, references, kind: str = "spot") -> str:
    """The damage-matched verdict on a mask kind in one configuration: one sentence where every reference gives the
    same verdict, otherwise a sentence that says the references disagree, with each one's verdict; then, against
    each reference, the points where code collapses with general text intact (collapse_points), and the verdict's
    sensitivity to the destroyed rule (sensitivity)."""
    verdicts = {ref: verdict(rows, configuration, ref, kind) for ref in references}
    labels = [reference_label(r) for r in verdicts]
    if len(set(verdicts.values())) == 1:
        v = next(iter(verdicts.values()))
        agree = f"the {len(labels)} general-text references agree" if len(labels) > 1 else "one general-text reference"
        how = f"; {_why_no_point(rows, configuration, kind)} ({agree})." if v == "no point" else \
            f" (damage-matched at {_compared_points(rows, configuration, kind)}; Holm p < {ALPHA:g}; {agree})."
        text = f"{configuration}: the {kind} mask " + VERDICTS[v].format(ref=" or ".join(labels)) + how
    else:
        parts = "; ".join(f"against {reference_label(r)} it " + VERDICTS[v].format(ref="it") for r, v in verdicts.items())
        text = f"{configuration}: the general-text references disagree, so no conclusion is drawn on the {kind}: {parts}."
    for ref in references:
        collapsed = collapse_points(rows, configuration, ref, kind)
        if collapsed:
            text += (f" Against {reference_label(ref)}, {COLLAPSE_LABEL} at " + "; ".join(collapsed)
                     + " (no matched excess: code is past ln |V|, beyond any damage random_uniform can match).")
    lines = {ref: sensitivity(rows, configuration, ref, kind) for ref in references}
    if any(lines.values()):
        same = {line for line in lines.values()}
        text += " " + (next(iter(same)) if len(same) == 1 else
                       " ".join(f"Against {reference_label(r)}: {line}" for r, line in lines.items() if line))
    return text


def _curve_excess(rows, configuration: str, kind: str) -> pd.DataFrame:
    """The seed-pooled matched-excess rows of a kind's curve in one configuration (every reference)."""
    df = _frame(rows)
    return df[(df.configuration == configuration) & df.mask_kind.isin(curve_kinds(kind))
              & (df.metric == MATCHED_EXCESS) & df.seed.isna()]


def _compared_points(rows, configuration: str, kind: str) -> str:
    """The points of a kind's curve that have a matched excess: 'top 1', 'k = 0.1% and k = 1%', ..."""
    me = _curve_excess(rows, configuration, kind)
    points = list(dict.fromkeys(_point(me[me.value.notna()].sort_values(["n_entries"]))))
    return "its point " + points[0] if len(points) == 1 else "its points " + ", ".join(points[:-1]) + " and " + points[-1]


def _why_no_point(rows, configuration: str, kind: str) -> str:
    """Why a mask kind has no matched excess: its points' statuses, e.g. 'all 5 points are destroyed', 'its only
    point is code collapses, general text intact'."""
    me = _curve_excess(rows, configuration, kind)
    status = me.assign(point=_point(me)).groupby("point").status.agg(
        lambda s: _point_status(s) or next(iter(s.dropna()), "missing"))
    counts = status.map(status_words).value_counts()
    if not len(counts):
        return "it was not ablated in this configuration"
    if len(counts) == 1:
        n, why = len(status), counts.index[0]
        if why == COLLAPSE_LABEL:
            return (f"at its only point {why}" if n == 1 else
                    f"at {'both' if n == 2 else f'all {n}'} of its points {why}")
        return f"its only point is {why}" if n == 1 else f"{'both' if n == 2 else f'all {n}'} of its points are {why}"
    named = {COLLAPSE_LABEL: lambda n: f"{'a collapse' if n == 1 else 'collapses'} ({COLLAPSE_LABEL})"}
    return "of its points, " + ", ".join(f"{n} {'is' if n == 1 else 'are'} {named.get(why, lambda _: why)(n)}"
                                         for why, n in counts.items())


def model_verdict(rows, configurations, references, model: str, kind: str = "spot") -> str:
    """One sentence on a model: the verdict where every configuration and reference give the same one, otherwise
    that they differ, with each configuration's verdicts."""
    verdicts = {(c, r): verdict(rows, c, r, kind) for c in configurations for r in references}
    if len(set(verdicts.values())) == 1:
        v = next(iter(verdicts.values()))
        return (f"{model}: the {kind} " + VERDICTS[v].format(ref=" or ".join(reference_label(r) for r in references))
                + f", in every configuration ({', '.join(configurations)}).")
    parts = "; ".join(f"{c} against {reference_label(r)}: {v}" for (c, r), v in verdicts.items())
    return f"{model}: no single verdict on the {kind}, the configurations or references differ ({parts})."


def model_summary(rows, configurations, references, model: str) -> str:
    """The sentence the index and the README state on a model: the verdict on the spot (model_verdict), then the
    one on the contrastive region code_over_general."""
    region = model_verdict(rows, configurations, references, model, kind="code_over_general")
    region = region.removeprefix(f"{model}: ").replace("the code_over_general", "the contrastive region code_over_general", 1)
    return model_verdict(rows, configurations, references, model) + " " + region[0].upper() + region[1:]


def verdict_basis(rows, configuration: str, reference: str, kind: str = "spot", alpha: float = ALPHA) -> list[str]:
    """The points a verdict rests on, each with its matched excess, 95% interval and Holm p ('top 1: +0.02 [+0.01,
    +0.03], p 0.0024'): the significant points where there are any, else every compared point."""
    df = _frame(rows)
    df = df[(df.configuration == configuration) & (df.reference == reference) & df.mask_kind.isin(curve_kinds(kind))
            & df.seed.isna()]
    me = df[(df.metric == MATCHED_EXCESS) & df.value.notna()].sort_values(["n_entries"])
    me = me.assign(point=_point(me).str.removeprefix("k = "))
    p = _pooled_by_point(df, P_HOLM_MATCHED_EXCESS)
    p = p.set_axis([(kind_, point.removeprefix("k = ")) for kind_, point in p.index]) if len(p) else p
    cells = [(f"{r.point}: {r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}], p {p.get((r.mask_kind, r.point)):.2g}",
              p.get((r.mask_kind, r.point), 1.0) < alpha) for r in me.itertuples()]
    significant = [c for c, hit in cells if hit]
    return significant or [c for c, _ in cells]


def rise_table(rows, k: float, configuration: str, reference: str) -> pd.DataFrame:
    """At one k, configuration and reference, per mask kind: code and general rise with 95% intervals, selectivity,
    and its difference from random_uniform's with a paired-bootstrap interval and Holm-corrected p (seed-pooled:
    one test per mask kind)."""
    df = _zero(_frame(rows))
    df = df.assign(configuration=df.configuration.fillna(df.granularity))
    at = df[(df.k_percent == k) & (df.configuration == configuration)
            & (df.reference.isna() | (df.reference == reference))].copy()
    part = at.subset.fillna("").str.startswith("code:")
    at.loc[part, "metric"] = "code_rise " + at.loc[part, "subset"].str.removeprefix("code:")
    cols = [CODE_RISE] + sorted(set(at.loc[part, "metric"])) + [GENERAL_RISE, SELECTIVITY,
                                                                  SELECTIVITY_MINUS_REFERENCE]
    table = ci_pivot(at[at.metric.isin(cols)], "mask_kind", "metric")
    table = table[[c for c in cols if c in table.columns]]
    p = at[(at.metric == P_HOLM_SELECTIVITY_VS_REFERENCE) & at.seed.isna()].groupby("mask_kind").value
    if (p.size() > 1).any():
        raise ValueError(f"more than one selectivity test per mask kind at k = {k:g}% ({configuration}, {reference})")
    p = p.first()
    table["p_holm vs random_uniform"] = p.reindex(table.index).map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    return table.rename(columns={GENERAL_RISE: f"general_rise ({reference_label(reference)})"})


def finding(rows, k: float, configuration: str, reference: str) -> str:
    """One sentence on the spot against random_uniform at k against one reference, computed from the rows (ratio
    selectivity: the secondary reading; destroyed and collapsed points say so)."""
    df = _zero(_frame(rows))
    df = df.assign(configuration=df.configuration.fillna(df.granularity))
    df = df[(df.k_percent == k) & (df.configuration == configuration) & ~df.subset.fillna("").str.startswith("code:")
            & (df.reference.isna() | (df.reference == reference))]
    label = reference_label(reference)

    def val(kind, metric):
        v = df[(df.mask_kind == kind) & (df.metric == metric)].value.dropna()
        return float(v.mean()) if len(v) else float("nan")
    sc, sg = val("spot", CODE_RISE), val("spot", GENERAL_RISE)
    uc, ug = val("random_uniform", CODE_RISE), val("random_uniform", GENERAL_RISE)
    text = (f"At k = {k:g}% ({configuration}) the spot raises code loss by {sc:+.1%} and {label} loss by {sg:+.1%}; "
            f"random_uniform of the same size: code {uc:+.1%}, {label} {ug:+.1%}. ")
    d = df[(df.mask_kind == "spot") & (df.metric == SELECTIVITY_MINUS_REFERENCE)]
    p = df[(df.mask_kind == "spot") & (df.metric == P_HOLM_SELECTIVITY_VS_REFERENCE)].value
    if len(d) and d.iloc[0].status == DESTROYED:
        text += (f"The spot or random_uniform is destroyed here ({label} at or above ln |V|, the mean loss of a "
                 "uniform guess): no selectivity is read.")
    elif len(d) and d.iloc[0].status == CODE_COLLAPSE:
        who = ("the spot" if _status_at(df, "spot", reference) == CODE_COLLAPSE else "random_uniform")
        text += (f"For {who}, {COLLAPSE_LABEL} here (the median code loss at or above ln |V|, {label} below it): "
                 "no selectivity is read; the rises above are its numbers.")
    elif len(d):
        r = d.iloc[0]
        verdict_ = ("more coding-specific than random damage" if r.ci_low > 0 else
                    "less coding-specific than random damage" if r.ci_high < 0 else
                    "not distinguishable from random damage in selectivity")
        text += (f"Spot selectivity minus random_uniform's: {r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] "
                 f"(Holm p = {float(p.iloc[0]):.3g}): {verdict_}.")
    else:
        text += "Selectivity is undefined for the spot or random_uniform here (a rise ≤ 1%): read the two rises."
    return text


def _status_at(df: pd.DataFrame, kind: str, reference: str):
    """A mask kind's status against a reference in rows of one point (its general_rise rows, any seed)."""
    return _point_status(df[(df.mask_kind == kind) & (df.metric == GENERAL_RISE) & (df.reference == reference)].status)


def code_only_collapses(rows, reference: str) -> pd.DataFrame:
    """(configuration, mask kind, k, code_rise, general_rise, code_loss, general_loss) of the points whose status
    against a reference is code_collapse (destroyed.point_status, any seed; no point destroyed): where code
    collapses while general text stays intact, with its rises (seeds averaged) and losses as multiples of ln |V|."""
    df = _zero(_frame(rows))
    df = df[df.k_percent.notna()].assign(configuration=lambda d: d.configuration.fillna(d.granularity))
    key = ["configuration", "mask_kind", "k_percent"]
    gen = df[(df.metric == GENERAL_RISE) & (df.reference == reference)]
    status = gen.groupby(key).status.agg(_point_status)
    hits = status[status == CODE_COLLAPSE].index
    columns = key + [CODE_RISE, GENERAL_RISE, "code_loss", "general_loss"]
    if not len(hits):
        return pd.DataFrame(columns=columns)
    code = df[(df.metric == CODE_RISE) & (df.subset == "code")].groupby(key).value.mean()
    ratio = df[df.metric == LOSS_OVER_UNIFORM]
    code_loss = ratio[ratio.subset == "code"].groupby(key).value.mean()
    general_loss = ratio[ratio.reference == reference].groupby(key).value.mean()
    out = pd.DataFrame({CODE_RISE: code.reindex(hits), GENERAL_RISE: gen.groupby(key).value.mean().reindex(hits),
                        "code_loss": code_loss.reindex(hits), "general_loss": general_loss.reindex(hits)})
    return out.reset_index()[columns]


def vector_shares(rows) -> pd.DataFrame:
    """Share of each evaluated mask's entries in norm vectors and biases (1-D tensors), per configuration, mask kind
    and k (mean over seeds)."""
    df = _zero(_frame(rows))
    df = df[df.metric == VECTOR_SHARE].assign(point=lambda d: _point(d))
    return df.pivot_table(index=["configuration", "mask_kind"], columns="point", values="value", aggfunc="mean",
                          sort=False)


def outlier_table(outliers: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Where the top entries sit: one row per (n, tensor holding any of them) with layer, module, count."""
    frames = []
    for labels, masks in outliers:
        d = distribution(masks)
        frames.append(d[d.selected > 0].assign(top_n=labels["n_entries"]))
    cols = ["top_n", "param", "layer", "module", "vector", "selected"]
    return pd.concat(frames)[cols].sort_values(["top_n", "selected"], ascending=[True, False]).reset_index(drop=True)
