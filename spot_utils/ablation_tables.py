"""Reading the ablation rows: the rise curves' frame, the table of rises and selectivity at one k, the sentence on
the spot against random damage, where code collapses while English holds, and where the outlier entries sit."""
from __future__ import annotations

import pandas as pd


def rise_frame(rows: list[dict]) -> pd.DataFrame:
    """code_rise / general_rise rows (zero mode) per mask kind and k: mean over seeds, and an error bar
    from the lowest interval bound to the highest over seeds (interval and seed spread together)."""
    df = pd.DataFrame(rows)
    df = df[df.metric.isin(["code_rise", "general_rise"]) & (df["mode"].fillna("zero") == "zero")
            & df.k_percent.notna() & ~df.subset.str.startswith("code:")]
    return (df.groupby(["granularity", "mask_kind", "k_percent", "metric"], sort=False)
            .agg(value=("value", "mean"), ci_low=("ci_low", "min"), ci_high=("ci_high", "max"), seeds=("value", "size"))
            .reset_index())


def outlier_table(outliers: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Where the top entries sit: one row per (n, tensor holding any of them) with layer, module, count."""
    from .structure import distribution
    frames = []
    for labels, masks in outliers:
        d = distribution(masks)
        frames.append(d[d.selected > 0].assign(top_n=labels["n_entries"]))
    cols = ["top_n", "param", "layer", "module", "vector", "selected"]
    return pd.concat(frames)[cols].sort_values(["top_n", "selected"], ascending=[True, False]).reset_index(drop=True)


def _zero(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["mode"].fillna("zero") == "zero"]


def rise_table(rows: list[dict], k: float, granularity: str) -> pd.DataFrame:
    """At one k and granularity, per mask kind: code and general rise with 95% intervals, selectivity, and its
    difference from random_uniform's with a paired-bootstrap interval and Holm-corrected p (seeds averaged)."""
    from .metrics import ci_pivot, to_frame
    df = _zero(to_frame(rows))
    at = df[(df.k_percent == k) & (df.granularity == granularity)].copy()  # contrastive regions are global
    part = at.subset.fillna("").str.startswith("code:")
    at.loc[part, "metric"] = "code_rise " + at.loc[part, "subset"].str.removeprefix("code:")
    cols = ["code_rise"] + sorted(set(at.loc[part, "metric"])) + ["general_rise", "selectivity",
                                                                  "selectivity_minus_reference"]
    table = ci_pivot(at[at.metric.isin(cols)], "mask_kind", "metric")
    table = table[[c for c in cols if c in table.columns]]
    p = at[at.metric == "p_holm_selectivity_vs_reference"].groupby("mask_kind").value.mean()
    table["p_holm vs random_uniform"] = p.reindex(table.index).map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    return table


def finding(rows: list[dict], k: float, granularity: str) -> str:
    """One sentence on the spot against random_uniform at k, computed from the rows."""
    from .metrics import to_frame
    df = _zero(to_frame(rows))
    df = df[(df.k_percent == k) & (df.granularity == granularity) & ~df.subset.fillna("").str.startswith("code:")]

    def val(kind, metric):
        v = df[(df.mask_kind == kind) & (df.metric == metric)].value
        return float(v.mean()) if len(v) else float("nan")
    sc, sg = val("spot", "code_rise"), val("spot", "general_rise")
    uc, ug = val("random_uniform", "code_rise"), val("random_uniform", "general_rise")
    text = (f"At k = {k:g}% ({granularity}) the spot raises code loss by {sc:+.1%} and English loss by {sg:+.1%}; "
            f"random_uniform of the same size: code {uc:+.1%}, English {ug:+.1%}. ")
    d = df[(df.mask_kind == "spot") & (df.metric == "selectivity_minus_reference")]
    p = df[(df.mask_kind == "spot") & (df.metric == "p_holm_selectivity_vs_reference")].value
    if len(d):
        r = d.iloc[0]
        verdict = ("more coding-specific than random damage" if r.ci_low > 0 else
                   "less coding-specific than random damage" if r.ci_high < 0 else
                   "not distinguishable from random damage in selectivity")
        text += (f"Spot selectivity minus random_uniform's: {r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] "
                 f"(Holm p = {float(p.iloc[0]):.3g}): {verdict}.")
    else:
        text += "Selectivity is undefined for the spot or random_uniform here (a rise ≤ 1%): read the two rises."
    return text


def code_only_collapses(rows: list[dict], code_min: float = 0.5, general_max: float = 0.1) -> pd.DataFrame:
    """(mask kind, k, granularity) where code loss rises by more than code_min while English rises by less
    than general_max (seeds averaged): where, if anywhere, code collapses while English holds."""
    rf = rise_frame(rows)
    wide = rf.pivot_table(index=["granularity", "mask_kind", "k_percent"], columns="metric", values="value")
    if not {"code_rise", "general_rise"} <= set(wide.columns):
        return wide.iloc[0:0]
    return wide[(wide.code_rise > code_min) & (wide.general_rise < general_max)].reset_index()
