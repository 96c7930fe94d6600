"""Figures shared by the stage notebooks: one idea per figure, one fixed colour per mask kind in every figure,
colour scales that include the null value, legends beside the data and no overlapping labels."""
from __future__ import annotations

from pathlib import Path

from matplotlib.colors import LogNorm
from matplotlib.patches import Patch
import matplotlib.pyplot as plt
from matplotlib.ticker import LogLocator
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..analysis.metric_names import CODE_RISE, GENERAL_RISE, LOSS_RISE, TUNING_CODE_GAIN, TUNING_GENERAL_FORGETTING
from ..base.io import atomic_path
from ..method.mask_kinds import EXTRA_COLORS, MASK_KINDS

_CB = sns.color_palette("colorblind")
# mask kind -> colour, the same in every figure, from the mask-kind table (method/mask_kinds.py; a kind registered
# without one gets one of mask_kinds.EXTRA_COLORS in registration order);
# families share a hue: the spot red, random controls blue, magnitude green, contrastive regions purple
MASK_COLORS = {name: kind.color for name, kind in MASK_KINDS.items() if kind.color is not None}
LABEL_KINDS = {"shared core": "shared"}  # labels figures use for a mask kind
LANGUAGE_PALETTE = "tab20b"  # languages: many light, distinct hues, none of the mask kinds' reds, greys or black
sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def mask_color(kind: str, default="#7f7f7f"):
    """The fixed colour of a mask kind (or of a figure label standing for one, e.g. 'shared core'); a registered
    kind without one gets an EXTRA_COLORS entry by its position among such kinds."""
    kind = LABEL_KINDS.get(kind, kind)
    if kind not in MASK_KINDS:
        return default
    if MASK_KINDS[kind].color is not None:
        return MASK_KINDS[kind].color
    extra = [n for n, k in MASK_KINDS.items() if k.color is None]
    return EXTRA_COLORS[extra.index(kind) % len(EXTRA_COLORS)]


def mask_marker(kind: str, default: str = "o") -> str:
    """The fixed marker of a mask kind (the mask-kind table's)."""
    return MASK_KINDS[kind].marker if kind in MASK_KINDS else default


def language_colors(labels) -> dict:
    """Colours for labels that are not mask kinds (languages, models), distinct from every mask colour."""
    others = [l for l in dict.fromkeys(labels) if mask_color(l, None) is None]
    palette = sns.color_palette(LANGUAGE_PALETTE, 20)
    step = max(1, 20 // max(len(others), 1))
    return {l: palette[(i * step + i // 20) % 20] for i, l in enumerate(others)}


def short_number(v) -> str:
    """Compact cell text: 105 -> '105', 12.3 -> '12', 1.23 -> '1.2', 0.0123 -> '0.012'; blank for NaN."""
    if v is None or not np.isfinite(v):
        return ""
    a = abs(v)
    if a >= 9.95:
        return f"{v:,.0f}"
    if a >= 0.995 or a == 0:
        return f"{v:.1f}"
    return f"{v:.2g}"


def _legend_outside(ax, **kwargs):
    """Legend to the right of the axes, off the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8,
                  frameon=False, **kwargs)


def _rotate_xticks(ax):
    """Vertical tick labels: names of any length side by side without touching."""
    for label in ax.get_xticklabels():
        label.set_rotation(90)
        label.set_horizontalalignment("center")


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


def _annotated(ax, mat: pd.DataFrame, **kwargs):
    """seaborn heatmap with compact cell numbers (short_number) in a font that fits the cells."""
    text = mat.map(short_number) if hasattr(mat, "map") else mat.applymap(short_number)
    sns.heatmap(mat if "data" not in kwargs else kwargs.pop("data"), annot=text, fmt="", ax=ax,
                annot_kws={"fontsize": 8}, linewidths=0.5, linecolor="white", **kwargs)
    ax.grid(False)  # empty cells (a language with itself) stay blank


def _ratio_heatmap(ax, mat: pd.DataFrame, label: str, annotate: bool = True):
    """Ratios whose null value is 1 (observed / expected, enrichment): colour on log2 with 1 white in the middle
    of a symmetric scale, numbers as they are, colour-bar ticks in ratio units."""
    logs = np.log2(mat.astype(float).clip(lower=1 / 64))
    lim = max(float(np.nanmax(np.abs(logs.to_numpy()))), 0.5) if np.isfinite(logs.to_numpy()).any() else 1.0
    kwargs = dict(cmap="vlag", center=0, vmin=-lim, vmax=lim,
                  cbar_kws={"label": f"{label}\n(log colour scale; white = 1, no difference)",
                            "format": plt.FuncFormatter(lambda x, _: short_number(2 ** x))})
    if annotate:
        _annotated(ax, mat, data=logs, **kwargs)
    else:
        sns.heatmap(logs, ax=ax, **kwargs)
    round_ratios = [v for v in (1e-3, 1e-2, 0.1, 0.25, 0.5, 1, 2, 4, 10, 100, 1e3) if abs(np.log2(v)) <= lim]
    wide = [v for v in round_ratios if v in (1e-3, 1e-2, 0.1, 1, 10, 100, 1e3)]
    ax.collections[0].colorbar.set_ticks(np.log2(wide if len(wide) >= 3 else round_ratios))  # 0.1, 1, 10, ...


def layer_module_heatmap(dist: pd.DataFrame, title: str):
    """Share of each (layer, module type) selected, normalised by tensor size (percent, log colour scale so that
    weight matrices stay readable beside norm vectors that can be almost fully selected; blank = none selected)."""
    grid = dist.groupby(["layer", "module"]).agg(selected=("selected", "sum"), size=("size", "sum"))
    share = (100 * grid.selected / grid["size"]).unstack("module").fillna(0.0)
    positive = share.to_numpy()[share.to_numpy() > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if len(positive) and positive.max() > 10 * positive.min() else None
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(share) + 2))
    sns.heatmap(share.where(share > 0) if norm else share, cmap="viridis", norm=norm, ax=ax,
                vmin=None if norm else 0, cbar_kws={"label": "% of tensor entries selected" + (" (log scale; blank = 0)" if norm else "")})
    if norm:  # plain numbers on the log colour bar, no crowded minor labels
        bar = ax.collections[0].colorbar.ax.yaxis
        bar.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
        bar.set_minor_formatter(plt.NullFormatter())
    ax.tick_params(axis="y", labelsize=7, rotation=0)
    ax.set_xlabel("module type")
    ax.set_ylabel("decoder layer")
    ax.set_title(title)
    return fig


def pair_heatmap(pairs: pd.DataFrame, value: str, title: str, null: float | None = None, label: str | None = None):
    """Symmetric heatmap of a pairwise statistic between languages, each cell's value written in it.

    null: the value of no effect (1 for observed / expected): a diverging log scale centred on it; None for
    statistics that start at 0 (Jaccard), on a scale from 0."""
    langs = list(dict.fromkeys(list(pairs.a) + list(pairs.b)))
    mat = pd.DataFrame(np.nan, index=langs, columns=langs)
    for r in pairs.itertuples():
        mat.loc[r.a, r.b] = mat.loc[r.b, r.a] = getattr(r, value)
    fig, ax = plt.subplots(figsize=(0.7 * len(langs) + 3, 0.6 * len(langs) + 1.5))
    if null == 1:
        _ratio_heatmap(ax, mat, label or value)
    else:
        _annotated(ax, mat, cmap="mako_r", vmin=0, cbar_kws={"label": (label or value) + " (scale from 0)"})
    _rotate_xticks(ax)
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title)
    return fig


def upset(patterns: pd.DataFrame, languages: list[str], title: str, top: int = 20):
    """UpSet-style figure: entries selected by exactly each combination of languages (the `top` largest),
    bars above a dot matrix; colour marks the shared core (all languages) and language-specific sets (one)."""
    df = patterns.head(top).reset_index(drop=True)
    n = len(languages)
    several = "#9e9e9e"
    colors = [MASK_COLORS["shared"] if d == n else MASK_COLORS["specific"] if d == 1 else several for d in df.degree]
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
    bars.legend(handles=[Patch(color=MASK_COLORS["shared"], label="shared core (all)"),
                         Patch(color=MASK_COLORS["specific"], label="one language only"),
                         Patch(color=several, label="several")],
                loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _ratio_axis(ax, which: str, values) -> None:
    """Log scale (plain tick labels) on axis `which` ('x' / 'y') when the ratios span more than a factor 3."""
    v = np.asarray([x for x in values if np.isfinite(x) and x > 0])
    if len(v) and v.max() / v.min() > 3:
        getattr(ax, f"set_{which}scale")("log")
        getattr(ax, f"{which}axis").set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 1, 2, 5, 10, 20, ...
        getattr(ax, f"{which}axis").set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
        getattr(ax, f"{which}axis").set_minor_formatter(plt.NullFormatter())


def rise_curves(df: pd.DataFrame, title: str, general_label: str = "English prose"):
    """Code rise and general rise vs k per mask kind, with error bars; the line at 1 is no change; destroyed points
    (a loss at or above ln |V|) hollow.

    df: spot_utils.ablation_tables.rise_frame rows (metric code_rise / general_rise, value, ci_low, ci_high,
    destroyed); general_label names the general-text reference.
    """
    metrics = [m for m in (CODE_RISE, GENERAL_RISE) if m in set(df.metric)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics) + 1.8, 4), sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for kind, g in df[df.metric == metric].groupby("mask_kind", sort=False):
            g = g.sort_values("k_percent")
            y = 1 + g.value
            err = np.vstack([y - (1 + g.ci_low.fillna(g.value)), (1 + g.ci_high.fillna(g.value)) - y]).clip(0)
            ax.errorbar(g.k_percent, y, yerr=err, marker=mask_marker(kind), capsize=3, color=mask_color(kind),
                        label=kind)
            if "destroyed" in g and g.destroyed.any():
                ax.scatter(g.k_percent[g.destroyed], y[g.destroyed], s=60, facecolor="white",
                           edgecolor=mask_color(kind), zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}%"))
        ax.axhline(1, color="grey", lw=0.8, ls="--", label="no change (1)")
        ax.set_xlabel("k (% of scoped entries ablated)")
        ax.set_title({CODE_RISE: "code languages (mean)", GENERAL_RISE: general_label}[metric])
    if "destroyed" in df and df.destroyed.any():
        axes[0][-1].scatter([], [], s=60, facecolor="white", edgecolor="black", label="destroyed (≥ ln |V|)")
    _ratio_axis(axes[0][0], "y", 1 + pd.concat([df.value, df.ci_low, df.ci_high]))
    axes[0][0].set_ylabel("ablated loss / baseline loss (95% CI)")
    _legend_outside(axes[0][-1])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def profile_heatmap(profile: pd.DataFrame, title: str, xlabel: str, value: str = "enrichment"):
    """Rows = labels (languages, masks or models), columns = groups (module types or layers) of a structure.profile."""
    mat = profile.pivot_table(index="label", columns="group", values=value, sort=False)
    fig, ax = plt.subplots(figsize=(0.6 * mat.shape[1] + 3.5, 0.4 * mat.shape[0] + 1.8))
    if value == "enrichment":  # null value 1 (no preference) white in the middle, numbers as they are
        _ratio_heatmap(ax, mat, "enrichment (share selected / overall share)", annotate=mat.shape[1] <= 12)
    elif mat.shape[1] <= 12:
        _annotated(ax, mat, cmap="rocket_r", vmin=0, cbar_kws={"label": value})
    else:
        sns.heatmap(mat, cmap="rocket_r", vmin=0, ax=ax, cbar_kws={"label": value})
    if mat.shape[1] > 12 or max(len(str(c)) for c in mat.columns) > 4:
        _rotate_xticks(ax)
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("")
    ax.set_title(title)
    return fig


# profile_lines' other labels (languages, models): Paul Tol's colour-blind-safe "bright" scheme without its red (the
# spot's hue) and grey; colour, marker and line style each cycle, so no two lines share a colour and a marker
# (5 x 7 lines) or a colour and a line style (5 x 4)
PROFILE_COLORS = ("#4477aa", "#228833", "#ccbb44", "#66ccee", "#aa3377")
PROFILE_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
PROFILE_STYLES = ("-", "--", ":", "-.")


def profile_lines(profile: pd.DataFrame, title: str, xlabel: str, value: str = "enrichment"):
    """One line per label over ordered groups (layers or relative depth) of a structure.profile; labels that are
    mask kinds (spot, shared core) drawn thick and solid in their fixed colour and marker, the others thin in
    PROFILE_COLORS x PROFILE_MARKERS x PROFILE_STYLES."""
    fig, ax = plt.subplots(figsize=(9, 4))
    others = 0
    for label, g in profile.groupby("label", sort=False):
        kind = mask_color(label, None)
        if kind:
            style = dict(color=kind, marker=mask_marker(LABEL_KINDS.get(label, label)), ls="-", lw=2.5, zorder=3)
        else:
            style = dict(color=PROFILE_COLORS[others % len(PROFILE_COLORS)],
                         marker=PROFILE_MARKERS[others % len(PROFILE_MARKERS)],
                         ls=PROFILE_STYLES[others // len(PROFILE_COLORS) % len(PROFILE_STYLES)], lw=1.4, zorder=2)
            others += 1
        ax.plot(g.group, g[value], ms=4, label=label, **style)
    ax.axhline(1.0 if value == "enrichment" else 0.0, color="grey", lw=0.8, ls="--",
               label="no preference (1)" if value == "enrichment" else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(value + (" (share selected / overall share)" if value == "enrichment" else ""))
    ax.set_title(title)
    _legend_outside(ax)
    return fig


def stability_curves(stab: pd.DataFrame, title: str):
    """Jaccard between the top-k sets of the two halves of the score split vs k, with chance (random sets)."""
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = language_colors(s for s in stab.subset if s != "aggregate")
    for subset, g in stab.groupby("subset", sort=False):
        agg = subset == "aggregate"
        ax.plot(g.k_percent, g.jaccard, marker="o", lw=2.5 if agg else 1, alpha=1 if agg else 0.8,
                color=MASK_COLORS["spot"] if agg else colors[subset], label="spot (aggregate)" if agg else subset)
    chance = stab.groupby("k_percent").jaccard_chance.mean()
    ax.plot(chance.index, chance.values, ls="--", color="grey", label="chance (random sets)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}%"))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("k (% of scoped entries)")
    ax.set_ylabel("Jaccard (half A vs half B)")
    ax.set_title(title)
    _legend_outside(ax)
    return fig


def cross_ablation_heatmap(df: pd.DataFrame, title: str):
    """Loss rise (%) of every evaluated subset (columns) when each language's specific region (rows) is ablated;
    white is no change."""
    d = df[df.metric == LOSS_RISE].assign(region=lambda x: x.mask_kind.str.removeprefix("specific:"))
    mat = 100 * d.pivot_table(index="region", columns="subset", values="value", sort=False)
    fig, ax = plt.subplots(figsize=(0.65 * mat.shape[1] + 3.5, 0.5 * mat.shape[0] + 2))
    _annotated(ax, mat, cmap="vlag", center=0, cbar_kws={"label": "loss rise (%; white = no change)"})
    _rotate_xticks(ax)
    ax.tick_params(axis="y", rotation=0)
    ax.set_xlabel("evaluated subset")
    ax.set_ylabel("ablated language-specific region")
    ax.set_title(title)
    return fig


def metric_by_mask(df: pd.DataFrame, metric: str, title: str, xlabel: str, chance: dict | None = None):
    """One metric per subset (rows) and mask kind (colours), as points with 95% interval bars; `chance` (subset ->
    value) draws each subset's chance level; a log axis where the values span more than a factor 10."""
    d = df[df.metric == metric]
    subsets = list(dict.fromkeys(d.subset))
    kinds = list(dict.fromkeys(d.mask_kind))
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(subsets) * max(1, len(kinds)) / 2 + 1.5))
    step = min(0.15, 0.8 / max(len(kinds), 1))
    for j, kind in enumerate(kinds):
        g = d[d.mask_kind == kind].groupby("subset").agg(value=("value", "mean"), lo=("ci_low", "min"),
                                                          hi=("ci_high", "max")).reindex(subsets)
        y = np.arange(len(subsets)) + (j - (len(kinds) - 1) / 2) * step
        ax.errorbar(g.value, y, xerr=np.vstack([g.value - g.lo.fillna(g.value), g.hi.fillna(g.value) - g.value]).clip(0),
                    fmt="o", capsize=2, color=mask_color(kind), label=kind)
    for i, s in enumerate(subsets):
        if chance and s in chance:
            ax.plot([chance[s]] * 2, [i - 0.4, i + 0.4], color="black", ls=":", lw=1.2,
                    label="chance" if i == next(k for k, t in enumerate(subsets) if t in chance) else None)
    v = d.value[d.value > 0]
    if len(v) and v.max() / v.min() > 10:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_yticks(range(len(subsets)), subsets)
    ax.set_ylim(len(subsets) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    _legend_outside(ax)
    ax.set_title(title)
    return fig


MIN_COVERAGE = 0.3  # a damage plot's comparable points (with the origin) span at least this share of each axis


def _with_status(points: pd.DataFrame) -> pd.DataFrame:
    """damage_frame points with `collapse` and `kept` (frames without them: no collapse, kept unless destroyed)."""
    collapse = points["collapse"] if "collapse" in points else pd.Series(False, index=points.index)
    collapse = collapse.fillna(False).astype(bool)
    destroyed = points.destroyed.fillna(False).astype(bool)
    return points.assign(destroyed=destroyed, collapse=collapse, kept=~destroyed & ~collapse)


def _comparable(points: pd.DataFrame) -> pd.DataFrame:
    """The points a damage-matched verdict can rest on (damage_frame's `comparable`; without it, every kept point
    that is not random_uniform's own)."""
    points = _with_status(points)
    keep = points.comparable if "comparable" in points else points.kept & (points.mask_kind != "random_uniform")
    return points[keep.fillna(False).astype(bool)]


def _fitted(values: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """An axis range around `values` (which include the origin), widened to random_uniform's next point beyond
    them so that its curve brackets them, but never so far that the values cover less than 40% of it."""
    lo, hi = min(values.min(), 0.0), values.max()
    beyond = reference[reference > hi]
    if len(beyond):
        hi = min(beyond.min(), lo + (hi - lo) / 0.4) if hi > lo else beyond.min()
    if hi <= lo:
        hi = lo + 0.05
    pad = 0.06 * (hi - lo)
    return lo - pad, hi + pad


def damage_view(points: pd.DataFrame) -> dict:
    """The axes a damage plot draws, fitted to its comparable points (ln(1 + rise) coordinates): xlim, ylim, how
    many points are comparable, the share of each axis that they and the origin span (coverage, None without
    comparable points) and how many points fall outside the axes (shown in the overview)."""
    log = np.log1p
    points = _with_status(points)
    comp = _comparable(points)
    ref = points[(points.mask_kind == "random_uniform") & points.kept]
    if len(comp):
        xs, ys = np.r_[0.0, log(comp.general_rise)], np.r_[0.0, log(comp.code_rise)]
    else:  # nothing comparable: random_uniform's curve itself
        xs, ys = np.r_[0.0, log(ref.general_rise)], np.r_[0.0, log(ref.code_rise)]
    xlim, ylim = _fitted(xs, log(ref.general_rise).to_numpy()), _fitted(ys, log(ref.code_rise).to_numpy())
    x, y = log(points.general_rise), log(points.code_rise)
    outside = int((~(x.between(*xlim) & y.between(*ylim))).sum())
    coverage = ((np.ptp(xs) / (xlim[1] - xlim[0]), np.ptp(ys) / (ylim[1] - ylim[0])) if len(comp) else None)
    return dict(xlim=xlim, ylim=ylim, comparable=len(comp), coverage=coverage, outside=outside)


def _point_label(row) -> str:
    return f"top {row.n_entries:g}" if row.mask_kind == "top_entries" else f"{row.k_percent:g}%"


def _separate(fig, texts, step: float = 1.1) -> None:
    """Move point labels up, one line at a time, until no two overlap (labels keep their x)."""
    for _ in range(60):
        fig.canvas.draw()
        boxes = [t.get_window_extent() for t in texts]
        clash = {j for i in range(len(texts)) for j in range(i + 1, len(texts))
                 if min(boxes[i].x1, boxes[j].x1) - max(boxes[i].x0, boxes[j].x0) > 0
                 and min(boxes[i].y1, boxes[j].y1) - max(boxes[i].y0, boxes[j].y0) > 0}
        if not clash:
            return
        for j in clash:
            dx, dy = texts[j].get_position()
            texts[j].set_position((dx, dy + step * texts[j].get_fontsize()))


def damage_plot(points: pd.DataFrame, title: str, general_label: str = "general text", kinds=None,
                figsize=(10, 5.8)):
    """The damage-matched comparison: x = ln(1 + general rise), y = ln(1 + code rise). The axes are fitted to the
    comparable points (damage_view); an overview beside them shows every point, destroyed ones (the reference at or
    above ln |V|, hollow) included. random_uniform's curve joins the origin and its kept points (seeds pooled)
    inside its seed band; every other mask kind has its own colour and marker, with 95% intervals, and each point
    of a kind with several (the spot's top n entries, its k grid) carries its n or k. Ringed points: code collapses
    while general text stays intact (status code_collapse of the destroyed rule: no matched excess, drawn at their
    measured rises). Above the curve a mask hurts code more than random damage that hurts general text equally.
    kinds: only these mask kinds (random_uniform always).

    points: spot_utils.report.tables.damage_frame rows.
    """
    if kinds is not None:
        points = points[points.mask_kind.isin(set(kinds) | {"random_uniform"})]
    points = _with_status(points)
    view = damage_view(points)
    fig = plt.figure(figsize=figsize)
    ax = fig.add_axes([0.08, 0.1, 0.56, 0.8])
    overview = fig.add_axes([0.73, 0.1, 0.25, 0.3])
    log = np.log1p
    ref = points[points.mask_kind == "random_uniform"].sort_values(GENERAL_RISE)
    intact = ref[ref.kept]
    color = mask_color("random_uniform")
    for a in (ax, overview):
        a.plot(np.r_[0.0, log(intact.general_rise)], np.r_[0.0, log(intact.code_rise)], color=color, lw=2,
               label="random_uniform (seeds pooled)" if a is ax else None, zorder=2)
    ax.fill_between(np.r_[0.0, log(intact.general_rise)], np.r_[0.0, log(intact.c_min)], np.r_[0.0, log(intact.c_max)],
                    color=color, alpha=0.25, lw=0, label="random_uniform seed range")
    ax.scatter(log(intact.general_rise), log(intact.code_rise), color=color, marker=mask_marker("random_uniform"),
               s=24, zorder=3)
    texts = []
    for kind, g in points[points.mask_kind != "random_uniform"].groupby("mask_kind", sort=False):
        x, y = log(g.general_rise), log(g.code_rise)
        c, m = mask_color(kind), mask_marker(kind)
        err = dict(xerr=np.vstack([x - log(g.g_lo.fillna(g.general_rise)), log(g.g_hi.fillna(g.general_rise)) - x]).clip(0),
                   yerr=np.vstack([y - log(g.c_lo.fillna(g.code_rise)), log(g.c_hi.fillna(g.code_rise)) - y]).clip(0))
        ax.errorbar(x, y, **err, fmt="none", ecolor=c, elinewidth=1, capsize=2, alpha=0.8)
        ax.scatter([], [], color=c, marker=m, s=40, label=kind)  # one legend entry per kind, destroyed or not
        for a, size in ((ax, 44), (overview, 16)):
            a.scatter(x[~g.destroyed], y[~g.destroyed], color=c, marker=m, s=size, zorder=3)
            a.scatter(x[g.destroyed], y[g.destroyed], facecolor="white", edgecolor=c, marker=m, s=size, zorder=3)
        inside = x.between(*view["xlim"]) & y.between(*view["ylim"])
        if len(g) > 1 or kind == "top_entries":  # the main axes label the points inside them, the overview the rest
            for row, xi, yi, here in zip(g.itertuples(), x, y, inside):
                if here or kind == "top_entries":
                    texts.append((ax if here else overview).annotate(
                        _point_label(row), (xi, yi), xytext=(4, 3), textcoords="offset points", fontsize=8 if here
                        else 6, color=c))
    collapsed = points[points.collapse]
    for a, size in ((ax, 260), (overview, 90)):
        a.scatter(log(collapsed.general_rise), log(collapsed.code_rise), s=size, facecolor="none", edgecolor="black",
                  lw=1.2, zorder=4, label="code collapses, general intact" if a is ax and len(collapsed) else None)
    ax.scatter(log(ref.general_rise[~ref.kept]), log(ref.code_rise[~ref.kept]), facecolor="white",
               edgecolor=color, marker=mask_marker("random_uniform"), s=36, zorder=3)
    ax.scatter([0], [0], color="black", marker="+", s=80, zorder=4, label="origin (no damage)")
    if points.destroyed.any():
        ax.scatter([], [], facecolor="white", edgecolor="black", s=36, label="destroyed (hollow, left out)")
    ax.set_xlim(*view["xlim"])
    ax.set_ylim(*view["ylim"])
    ax.set_xlabel(f"ln(1 + {general_label} rise)")
    ax.set_ylabel("ln(1 + code rise)")
    ax.set_title(title, fontsize=11)
    overview.add_patch(plt.Rectangle((view["xlim"][0], view["ylim"][0]), np.diff(view["xlim"])[0],
                                     np.diff(view["ylim"])[0], fill=False, ls="--", lw=1, color="black"))
    overview.set_title(f"every point ({view['outside']} beyond the main axes)", fontsize=8)
    overview.tick_params(labelsize=7)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.71, 0.92), fontsize=8, frameon=False)
    _separate(fig, texts)
    fig.damage_view = view
    return fig


ARM_STYLES = {"lora": ("#000000", "d"), "full": ("#7f7f7f", "H")}  # stage 07's arms that train no mask


def _arm_style(key: str) -> tuple[str, str]:
    """(colour, marker) of a stage-07 arm: a mask kind's own, or ARM_STYLES'."""
    color, marker = ARM_STYLES.get(key, (None, None))
    return mask_color(key, color or "#7f7f7f"), marker or mask_marker(key)


def _tuning_points(df: pd.DataFrame, metric: str, subset: str) -> pd.DataFrame:
    """Stage 07's pooled rows of one metric and subset, one per arm and k, with a label and a colour key."""
    g = df[(df.metric == metric) & (df.subset == subset) & df.seed.isna()].copy()
    g["key"] = [kind if arm == "sparse" else arm for arm, kind in zip(g.arm, g.mask_kind)]
    g["label"] = [" ".join(x for x in (key, c if isinstance(c, str) else "", "" if pd.isna(k) else f"{k:g}%") if x)
                  for key, c, k in zip(g.key, g.configuration, g.k_percent)]
    return g


def tuning_gain_vs_forgetting(df: pd.DataFrame, reference: str, title: str):
    """Stage 07: code gain against general forgetting on `reference`, one point per arm and k with its 95% intervals
    (rows of tuning_rows.gain_rows; up and to the left is better)."""
    gain = _tuning_points(df, TUNING_CODE_GAIN, "code").set_index(["label"])
    forget = _tuning_points(df, TUNING_GENERAL_FORGETTING, reference).set_index(["label"])
    both = gain.join(forget[["value", "ci_low", "ci_high"]], rsuffix="_f", how="inner")
    fig, ax = plt.subplots(figsize=(7, 5))
    for label, r in both.iterrows():
        color, marker = _arm_style(r.key)
        ax.errorbar(r.value_f, r.value, xerr=[[r.value_f - r.ci_low_f], [r.ci_high_f - r.value_f]],
                    yerr=[[r.value - r.ci_low], [r.ci_high - r.value]], fmt=marker, color=color,
                    capsize=2, ms=6)
        ax.annotate(label, (r.value_f, r.value), xytext=(4, 3), textcoords="offset points", fontsize=7, color=color)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"general forgetting on {reference} (tuned / untrained loss − 1)")
    ax.set_ylabel("code gain (1 − tuned / untrained code loss)")
    ax.set_title(title, fontsize=11)
    return fig


def tuning_gain_vs_trainable(df: pd.DataFrame, title: str):
    """Stage 07: code gain against the trainable count (log x), one point per arm and k with its 95% interval."""
    gain = _tuning_points(df, TUNING_CODE_GAIN, "code")
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in gain.itertuples():
        color, marker = _arm_style(r.key)
        ax.errorbar(r.n_entries, r.value, yerr=[[r.value - r.ci_low], [r.ci_high - r.value]], fmt=marker,
                    color=color, capsize=2, ms=6)
        ax.annotate(r.label, (r.n_entries, r.value), xytext=(4, 3), textcoords="offset points", fontsize=7,
                    color=color)
    ax.set_xscale("log")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("trainable entries")
    ax.set_ylabel("code gain (1 − tuned / untrained code loss)")
    ax.set_title(title, fontsize=11)
    return fig
