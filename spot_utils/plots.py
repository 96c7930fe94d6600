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


def score_distribution(scores_by_lang: dict[str, dict[str, torch.Tensor]], sample: int = 200_000, seed: int = 0):
    """Distribution of log10 |S| per language (a random sample of entries, zeros excluded)."""
    gen = torch.Generator().manual_seed(seed)
    frames = []
    for lang, scores in scores_by_lang.items():
        flat = torch.cat([s.flatten() for s in scores.values()]).abs()
        idx = torch.randint(0, len(flat), (min(sample, len(flat)),), generator=gen)
        v = flat[idx]
        frames.append(pd.DataFrame({"language": lang, "log10 |score|": torch.log10(v[v > 0]).numpy()}))
    df = pd.concat(frames)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(scores_by_lang) + 1.5))
    sns.boxplot(df, x="log10 |score|", y="language", ax=ax, fliersize=0.5, color=_CB[0])
    ax.set_title("Per-language importance scores span many orders of magnitude")
    return fig


def layer_module_heatmap(dist: pd.DataFrame, title: str):
    """Share of each (layer, module type) selected, normalised by tensor size (percent)."""
    grid = dist.groupby(["layer", "module"]).agg(selected=("selected", "sum"), size=("size", "sum"))
    share = (100 * grid.selected / grid["size"]).unstack("module").fillna(0.0)
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(share) + 2))
    sns.heatmap(share, cmap="viridis", ax=ax, cbar_kws={"label": "% of tensor entries selected"})
    ax.set_xlabel("module type")
    ax.set_ylabel("decoder layer")
    ax.set_title(title)
    return fig


def collapse_curves(df: pd.DataFrame, title: str):
    """Ablated / baseline loss vs k per mask kind; code languages averaged vs each general-text subset.

    df: rows with k_percent, mask_kind, group ('code' or a general subset), value (loss rise r), seed. Points are
    the mean over seeds, error bars span the seeds' min-max. The y axis turns logarithmic for large collapses.
    """
    groups = list(dict.fromkeys(df.group))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4.2), sharey=True, squeeze=False)
    for ax, group in zip(axes[0], groups):
        for kind, gk in df[df.group == group].groupby("mask_kind", sort=False):
            stats = gk.groupby("k_percent").value.agg(["mean", "min", "max"]).reset_index()
            y = 1 + stats["mean"]
            ax.errorbar(stats.k_percent, y, yerr=[(stats["mean"] - stats["min"]).clip(lower=0), (stats["max"] - stats["mean"]).clip(lower=0)], marker="o",
                        capsize=3, color=MASK_COLORS.get(kind, "k"), label=kind)
        ax.set_xscale("log")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel("k (% of scoped entries ablated)")
        ax.set_title(group)
    if (1 + df.value).max() > 3:
        axes[0][0].set_yscale("log")
    axes[0][0].set_ylabel("ablated loss / baseline loss")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
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
