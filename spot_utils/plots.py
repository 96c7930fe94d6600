"""Figures shared by the stage notebooks: one idea per figure, one colour per mask kind."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from .io import atomic_path

_CB = sns.color_palette("colorblind")
MASK_COLORS = {"baseline": _CB[7], "spot": _CB[3], "random": _CB[0], "random_uniform": _CB[9],
               "magnitude": _CB[2], "code_minus_general": _CB[4], "code_over_general": _CB[1],
               "top_entries": _CB[5]}
sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def save(fig, path: str | Path) -> Path:
    """Save a figure as PNG atomically (150 dpi) and return its path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    return path


def sample_abs(scores: dict[str, torch.Tensor], sample: int = 200_000, gen: torch.Generator | None = None):
    """|S| at `sample` random entries (drawn with replacement over all tensors), without concatenating them."""
    sizes = torch.tensor([s.numel() for s in scores.values()])
    total = int(sizes.sum())
    idx = torch.randint(0, total, (min(sample, total),), generator=gen)
    ends = sizes.cumsum(0)
    which = torch.searchsorted(ends, idx, right=True)
    out = torch.empty(len(idx))
    for i, s in enumerate(scores.values()):
        sel = (which == i).nonzero().flatten()
        out[sel] = s.reshape(-1)[idx[sel] - (ends[i] - sizes[i])].abs().float()
    return out


def score_distribution(scores_by_lang: dict[str, dict[str, torch.Tensor] | torch.Tensor], sample: int = 200_000,
                       seed: int = 0):
    """Distribution of log10 |S| per language (a random sample of entries, zeros excluded).

    A value may also be a sample already drawn with sample_abs (e.g. one language at a time, generator seeded
    with `seed` and used in the same order: the same figure)."""
    gen = torch.Generator().manual_seed(seed)
    logs = []
    for scores in scores_by_lang.values():
        v = scores if isinstance(scores, torch.Tensor) else sample_abs(scores, sample, gen)
        logs.append(torch.log10(v[v > 0]).numpy())
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(scores_by_lang) + 1.5))
    # matplotlib's boxplot on the arrays: seaborn's on a long table needs ~30 MB more per language
    ax.boxplot(logs, orientation="horizontal", tick_labels=list(scores_by_lang), widths=0.6, patch_artist=True,
               boxprops=dict(facecolor=_CB[0]), medianprops=dict(color="black"),
               flierprops=dict(marker="d", markersize=0.5))
    ax.invert_yaxis()  # first language on top
    ax.set_xlabel("log10 |score|")
    ax.set_ylabel("language")
    ax.set_title("Per-language importance scores span many orders of magnitude")
    return fig


def layer_module_heatmap(dist: pd.DataFrame, title: str):
    """Share of each (layer, module type) selected, normalised by tensor size (percent, log colour scale so that
    weight matrices stay readable beside norm vectors that can be almost fully selected)."""
    from matplotlib.colors import LogNorm
    grid = dist.groupby(["layer", "module"]).agg(selected=("selected", "sum"), size=("size", "sum"))
    share = (100 * grid.selected / grid["size"]).unstack("module").fillna(0.0)
    positive = share.to_numpy()[share.to_numpy() > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if len(positive) and positive.max() > 10 * positive.min() else None
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(share) + 2))
    sns.heatmap(share.where(share > 0) if norm else share, cmap="viridis", norm=norm, ax=ax,
                cbar_kws={"label": "% of tensor entries selected" + (" (log scale; blank = 0)" if norm else "")})
    ax.tick_params(axis="y", labelsize=7, rotation=0)
    ax.set_xlabel("module type")
    ax.set_ylabel("decoder layer")
    ax.set_title(title)
    return fig


def pair_heatmap(pairs: pd.DataFrame, value: str, title: str, fmt: str = ".2f"):
    """Symmetric heatmap of a pairwise statistic between languages."""
    langs = list(dict.fromkeys(list(pairs.a) + list(pairs.b)))
    mat = pd.DataFrame(np.nan, index=langs, columns=langs)
    for r in pairs.itertuples():
        mat.loc[r.a, r.b] = mat.loc[r.b, r.a] = getattr(r, value)
    fig, ax = plt.subplots(figsize=(0.6 * len(langs) + 2.5, 0.6 * len(langs) + 1.5))
    sns.heatmap(mat, annot=True, fmt=fmt, cmap="mako", ax=ax, cbar_kws={"label": value})
    ax.set_title(title)
    return fig


def upset(patterns: pd.DataFrame, languages: list[str], title: str, top: int = 20):
    """UpSet-style figure: entries selected by exactly each combination of languages (the `top` largest),
    bars above a dot matrix; colour marks the shared core (all languages) and language-specific sets (one)."""
    df = patterns.head(top).reset_index(drop=True)
    n = len(languages)
    colors = [MASK_COLORS["spot"] if d == n else _CB[2] if d == 1 else _CB[0] for d in df.degree]
    fig, (bars, dots) = plt.subplots(2, 1, figsize=(max(6, 0.45 * len(df) + 2), 3 + 0.3 * n), sharex=True,
                                     gridspec_kw={"height_ratios": [3, max(1.5, 0.3 * n)]})
    bars.bar(range(len(df)), df["count"], color=colors)
    bars.set_yscale("log")
    bars.set_ylabel("entries (log)")
    bars.set_title(title)
    for i, combo in enumerate(df.languages):
        ys = [languages.index(l) for l in combo]
        dots.scatter([i] * n, range(n), color="lightgrey", s=25)
        dots.scatter([i] * len(ys), ys, color="black", s=25)
        if len(ys) > 1:
            dots.plot([i, i], [min(ys), max(ys)], color="black", lw=1)
    dots.set_yticks(range(n), languages)
    dots.set_xticks([])
    dots.invert_yaxis()
    dots.grid(False)
    from matplotlib.patches import Patch
    bars.legend(handles=[Patch(color=MASK_COLORS["spot"], label="shared core (all)"),
                         Patch(color=_CB[2], label="one language only"), Patch(color=_CB[0], label="several")],
                fontsize=8)
    fig.tight_layout()
    return fig


def _ratio_axis(ax, which: str, values) -> None:
    """Log scale (plain tick labels) on axis `which` ('x' / 'y') when the ratios span more than a factor 3."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / v.min() > 3:
        getattr(ax, f"set_{which}scale")("log")
        getattr(ax, f"{which}axis").set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))


def rise_curves(df: pd.DataFrame, title: str):
    """Code rise and general rise vs k per mask kind, with error bars (issue 5).

    df: spot_utils.sweep.rise_frame rows (metric code_rise / general_rise, value, ci_low, ci_high).
    """
    metrics = [m for m in ("code_rise", "general_rise") if m in set(df.metric)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for kind, g in df[df.metric == metric].groupby("mask_kind", sort=False):
            g = g.sort_values("k_percent")
            y = 1 + g.value
            err = np.vstack([y - (1 + g.ci_low.fillna(g.value)), (1 + g.ci_high.fillna(g.value)) - y]).clip(0)
            ax.errorbar(g.k_percent, y, yerr=err, marker="o", capsize=3, color=MASK_COLORS.get(kind, "k"), label=kind)
        ax.set_xscale("log")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel("k (% of scoped entries ablated)")
        ax.set_title({"code_rise": "code languages (mean)", "general_rise": "English prose"}[metric])
    _ratio_axis(axes[0][0], "y", 1 + pd.concat([df.value, df.ci_low, df.ci_high]))
    axes[0][0].set_ylabel("ablated loss / baseline loss (95% CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def profile_heatmap(profile: pd.DataFrame, title: str, xlabel: str, value: str = "enrichment"):
    """Rows = labels (languages, masks or models), columns = groups (module types or layers) of a structure.profile."""
    mat = profile.pivot_table(index="label", columns="group", values=value, sort=False)
    fig, ax = plt.subplots(figsize=(0.55 * mat.shape[1] + 3, 0.4 * mat.shape[0] + 1.8))
    if value == "enrichment":  # colour on log2 (1 = no preference in the middle), numbers as they are
        sns.heatmap(np.log2(mat.clip(lower=1 / 64)), annot=mat if mat.shape[1] <= 12 else False, fmt=".2g",
                    cmap="vlag", center=0, ax=ax, cbar_kws={"label": "log2 enrichment (share selected / overall share)"})
    else:
        sns.heatmap(mat, annot=mat.shape[1] <= 12, fmt=".2g", cmap="rocket_r", ax=ax, cbar_kws={"label": value})
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    ax.set_title(title)
    return fig


def profile_lines(profile: pd.DataFrame, title: str, xlabel: str, value: str = "enrichment"):
    """One line per label over ordered groups (layers or relative depth) of a structure.profile."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for label, g in profile.groupby("label", sort=False):
        ax.plot(g.group, g[value], marker="o", ms=3, label=label)
    ax.axhline(1.0 if value == "enrichment" else 0.0, color="grey", lw=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(value + (" (share selected / overall share)" if value == "enrichment" else ""))
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def stability_curves(stab: pd.DataFrame, title: str):
    """Jaccard between the top-k sets of the two halves of the score split vs k, with chance (random sets)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for subset, g in stab.groupby("subset", sort=False):
        agg = subset == "aggregate"
        ax.plot(g.k_percent, g.jaccard, marker="o", lw=2.5 if agg else 1, alpha=1 if agg else 0.6,
                color=MASK_COLORS["spot"] if agg else None, label="spot (aggregate)" if agg else subset)
    chance = stab.groupby("k_percent").jaccard_chance.mean()
    ax.plot(chance.index, chance.values, ls="--", color="grey", label="chance")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (% of scoped entries)")
    ax.set_ylabel("Jaccard (half A vs half B)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    return fig


def selectivity_scatter(df: pd.DataFrame, title: str):
    """Code rise against general rise, one point per (mask kind, k): below the diagonal English suffers
    more than code, far above it code collapses while English holds (issue 5).

    df: rise_frame rows pivoted to columns code_rise, general_rise with mask_kind and k_percent.
    """
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for kind, g in df.groupby("mask_kind", sort=False):
        ax.scatter(1 + g.general_rise, 1 + g.code_rise, color=MASK_COLORS.get(kind, "k"), label=kind, s=40)
        for r in g.itertuples():
            ax.annotate(f"{r.k_percent:g}%", (1 + r.general_rise, 1 + r.code_rise), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
    hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="equal rise")
    ratios = 1 + pd.concat([df.general_rise, df.code_rise])
    _ratio_axis(ax, "x", ratios)
    _ratio_axis(ax, "y", ratios)
    ax.set_xlabel("English loss, ablated / baseline")
    ax.set_ylabel("code loss (mean over languages), ablated / baseline")
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig


def cross_ablation_heatmap(df: pd.DataFrame, title: str):
    """Loss rise (%) of every evaluated subset (columns) when each language's specific region (rows) is ablated."""
    d = df[df.metric == "loss_rise"].assign(region=lambda x: x.mask_kind.str.removeprefix("specific:"))
    mat = 100 * d.pivot_table(index="region", columns="subset", values="value", sort=False)
    fig, ax = plt.subplots(figsize=(0.6 * mat.shape[1] + 3, 0.5 * mat.shape[0] + 2))
    sns.heatmap(mat, annot=True, fmt=".1f", cmap="rocket_r", ax=ax, cbar_kws={"label": "loss rise (%)"})
    ax.set_xlabel("evaluated subset")
    ax.set_ylabel("ablated language-specific region")
    ax.set_title(title)
    return fig


def metric_by_mask(df: pd.DataFrame, metric: str, title: str, xlabel: str):
    """One metric per subset (rows) and mask kind (colours), as points with 95% interval bars."""
    d = df[df.metric == metric]
    subsets = list(dict.fromkeys(d.subset))
    kinds = list(dict.fromkeys(d.mask_kind))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(subsets) * max(1, len(kinds)) / 2 + 1.5))
    for j, kind in enumerate(kinds):
        g = d[d.mask_kind == kind].groupby("subset").agg(value=("value", "mean"), lo=("ci_low", "min"),
                                                          hi=("ci_high", "max")).reindex(subsets)
        y = np.arange(len(subsets)) + (j - (len(kinds) - 1) / 2) * 0.15
        ax.errorbar(g.value, y, xerr=np.vstack([g.value - g.lo, g.hi - g.value]).clip(0), fmt="o", capsize=2,
                    color=MASK_COLORS.get(kind, "k"), label=kind)
    ax.set_yticks(range(len(subsets)), subsets)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return fig
