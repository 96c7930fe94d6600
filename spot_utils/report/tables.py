"""Reading the ablation rows: the rise curves' frame, the damage-matched comparison's table, figure frame and
verdicts (stated only where the general-text references agree), the table of rises and selectivity at one k, where
code collapses while general text holds, the norm and bias entries of each mask, and where the outlier entries sit.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..analysis.metric_names import (CODE_RISE, GENERAL_RISE, MATCHED_EXCESS, MDE_MATCHED_EXCESS, P_HOLM_MATCHED_EXCESS,
                                     P_HOLM_SELECTIVITY_VS_REFERENCE, SELECTIVITY, SELECTIVITY_MINUS_REFERENCE,
                                     VECTOR_SHARE)
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
    seed's point is destroyed. reference: only the general rises measured on it."""
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
    over seeds), their range over seeds, whether the point is destroyed and whether it is comparable (it has a
    seed-pooled matched excess: neither destroyed nor beyond random_uniform's reach)."""
    df = _zero(_frame(rows))
    df = df[df.configuration == configuration]
    df = df.assign(point=_point(df), seed=df.seed.fillna(-1), destroyed=df.destroyed.fillna(False).astype(bool))
    key = ["mask_kind", "point", "seed"]
    code = df[(df.metric == CODE_RISE) & (df.subset == "code")].set_index(key)
    gen = df[(df.metric == GENERAL_RISE) & (df.reference == reference)].set_index(key)
    both = code[["value", "ci_low", "ci_high", "k_percent", "n_entries"]].join(
        gen[["value", "ci_low", "ci_high", "destroyed"]], suffixes=("_c", "_g"), how="inner").reset_index()
    out = (both.groupby(["mask_kind", "point"], sort=False)
           .agg(code_rise=("value_c", "mean"), c_lo=("ci_low_c", "min"), c_hi=("ci_high_c", "max"),
                c_min=("value_c", "min"), c_max=("value_c", "max"), general_rise=("value_g", "mean"),
                g_lo=("ci_low_g", "min"), g_hi=("ci_high_g", "max"), g_min=("value_g", "min"),
                g_max=("value_g", "max"), seeds=("value_c", "size"), destroyed=("destroyed", "any"),
                k_percent=("k_percent", "first"), n_entries=("n_entries", "first"))
           .reset_index())
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
                                                else r.status)
        s = spread.loc[key] if key in spread.index else None
        out.append({"mask kind": r.mask_kind, "point": r.point,
                    "code rise": format_rise(rises.code_rise.get(key)),
                    "general rise": format_rise(rises.general_rise.get(key)),
                    "destroyed": bool(rises.destroyed.get(key, False)), "matched excess [95% CI]": cell,
                    "over seeds": f"{s['min']:+.3f} … {s['max']:+.3f}" if s is not None and s["count"] > 1 else "—",
                    "p (Holm)": f"{p[key]:.3g}" if key in p.index else "—",
                    "smallest detectable": f"{mde[key]:.3f}" if key in mde.index else "—"})
    return pd.DataFrame(out)


def verdict(rows, configuration: str, reference: str, kind: str = "spot", alpha: float = ALPHA) -> str:
    """One key of VERDICTS for the points of a mask kind's curve (seed-pooled; the spot's include the outlier masks,
    curve_kinds) against one reference: 'more' or 'less' when some point's matched excess is significant (Holm p <
    alpha) with that sign and none with the other, 'mixed' when both occur, 'none' when no point is significant, 'no
    point' when no point has a value."""
    df = _frame(rows)
    df = df[(df.configuration == configuration) & (df.reference == reference) & df.mask_kind.isin(curve_kinds(kind))]
    values = _pooled_by_point(df, MATCHED_EXCESS).dropna()
    if not len(values):
        return "no point"
    p = _pooled_by_point(df, P_HOLM_MATCHED_EXCESS)
    signs = {float(np.sign(v)) for key, v in values.items() if key in p.index and p[key] < alpha}
    return "mixed" if signs >= {1.0, -1.0} else "more" if 1.0 in signs else "less" if -1.0 in signs else "none"


def conclusion(rows, configuration: str, references, kind: str = "spot") -> str:
    """The damage-matched verdict on a mask kind in one configuration: one sentence where every reference gives the
    same verdict, otherwise a sentence that says the references disagree, with each one's verdict."""
    verdicts = {ref: verdict(rows, configuration, ref, kind) for ref in references}
    labels = [reference_label(r) for r in verdicts]
    if len(set(verdicts.values())) == 1:
        v = next(iter(verdicts.values()))
        agree = f"the {len(labels)} general-text references agree" if len(labels) > 1 else "one general-text reference"
        how = f"; {_why_no_point(rows, configuration, kind)} ({agree})." if v == "no point" else \
            f" (damage-matched at {_compared_points(rows, configuration, kind)}; Holm p < {ALPHA:g}; {agree})."
        return f"{configuration}: the {kind} mask " + VERDICTS[v].format(ref=" or ".join(labels)) + how
    parts = "; ".join(f"against {reference_label(r)} it " + VERDICTS[v].format(ref="it") for r, v in verdicts.items())
    return f"{configuration}: the general-text references disagree, so no conclusion is drawn on the {kind}: {parts}."


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
    """Why a mask kind has no matched excess: its points' statuses, e.g. 'all 5 points are destroyed'."""
    me = _curve_excess(rows, configuration, kind)
    status = me.assign(point=_point(me)).groupby("point").status.agg(lambda s: "destroyed" if (s == "destroyed").any()
                                                                     else next(iter(s.dropna()), "missing"))
    reason = {"destroyed": "destroyed", "outside_random_range": "beyond random_uniform's reach"}
    counts = status.map(lambda why: reason.get(why, why.replace("_", " "))).value_counts()
    if len(counts) == 1:
        n, why = len(status), counts.index[0]
        return f"its only point is {why}" if n == 1 else f"{'both' if n == 2 else f'all {n}'} of its points are {why}"
    return "of its points, " + ", ".join(f"{n} {'is' if n == 1 else 'are'} {why}" for why, n in counts.items())


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
    selectivity: the secondary reading; destroyed points say so)."""
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
    if len(d) and d.iloc[0].status == "destroyed":
        text += "The spot or random_uniform is destroyed here (a loss at or above ln |V|): no selectivity is read."
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


CODE_COLLAPSE, GENERAL_INTACT = 0.5, 0.1  # "code collapses, general intact": code rise above 50%, general below 10%


def collapses(code_rise, general_rise, code_min: float = CODE_COLLAPSE, general_max: float = GENERAL_INTACT):
    """Whether code collapses while general text holds: code rise above code_min and general rise below
    general_max (elementwise on arrays)."""
    return (np.asarray(code_rise) > code_min) & (np.asarray(general_rise) < general_max)


def code_only_collapses(rows, reference: str, code_min: float = CODE_COLLAPSE,
                        general_max: float = GENERAL_INTACT) -> pd.DataFrame:
    """(configuration, mask kind, k) where code loss rises by more than code_min while the reference's rises by
    less than general_max (seeds averaged), destroyed points left out: where, if anywhere, code collapses while
    general text holds."""
    rf = rise_frame(rows, reference)
    gone = rf.groupby(["configuration", "mask_kind", "k_percent"]).destroyed.any()
    wide = rf.pivot_table(index=["configuration", "mask_kind", "k_percent"], columns="metric", values="value")
    if not {CODE_RISE, GENERAL_RISE} <= set(wide.columns):
        return wide.iloc[0:0]
    wide = wide[~gone.reindex(wide.index).fillna(False).astype(bool)]
    return wide[collapses(wide.code_rise, wide.general_rise, code_min, general_max)].reset_index()


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
