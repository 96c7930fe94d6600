"""Every figure function drawn on synthetic data with the real language names: no two text labels overlap, every
mask kind keeps one colour that its neighbours cannot be mistaken for."""
import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_hex, to_rgb  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from spot_utils.report import plots  # noqa: E402

SCORED = ["bash", "csharp", "cpp", "go", "java", "javascript", "ruby", "rust", "typescript"]
UNSEEN = ["python", "c", "php"]
MODULES = ["q", "k", "v", "o", "gate", "up", "down", "norm"]
KINDS = ["spot", "random", "random_uniform", "magnitude", "code_over_general", "code_minus_general"]
RNG = np.random.default_rng(0)


def pairs(low, high):
    return pd.DataFrame([dict(a=a, b=b, value=RNG.uniform(low, high)) for a, b in itertools.combinations(SCORED, 2)])


def rises():
    rows = []
    for kind, k, metric in itertools.product(KINDS, (0.001, 0.01, 0.1, 1.0, 5.0), ("code_rise", "general_rise")):
        v = {"spot": 18 * k, "random": 0.02 * k}.get(kind, 0.05 * k) * RNG.uniform(0.8, 1.2)
        rows.append(dict(granularity="global", mask_kind=kind, k_percent=k, metric=metric, value=v, ci_low=0.9 * v,
                         ci_high=1.1 * v))
    return pd.DataFrame(rows)


def damage_points():
    """Points as ablation_tables.damage_frame gives them: random_uniform's curve with a seed range, the other kinds
    with intervals, destroyed points among them."""
    rows = []
    for kind in KINDS + ["spot_norms", "top_entries"]:
        for i, k in enumerate((0.001, 0.01, 0.1, 1.0, 5.0, 20.0) if kind == "random_uniform" else (0.001, 0.1, 1.0)):
            g = 0.02 * 3 ** i * RNG.uniform(0.8, 1.2)
            c = g * (3 if kind == "spot" else 1.1) * RNG.uniform(0.9, 1.1)
            n = 10 ** i if kind == "top_entries" else None
            rows.append(dict(mask_kind=kind, point=f"top {n}" if n else f"k = {k:g}%", k_percent=None if n else k,
                             n_entries=n, general_rise=g,
                             g_lo=0.8 * g, g_hi=1.2 * g, g_min=0.9 * g, g_max=1.1 * g, code_rise=c, c_lo=0.8 * c,
                             c_hi=1.2 * c, c_min=0.9 * c, c_max=1.1 * c, seeds=3, destroyed=c > 5))
    return pd.DataFrame(rows)


def profile(groups, labels):
    return pd.DataFrame([dict(label=l, group=g, enrichment=RNG.choice([0.02, 0.9, 1.4, 12.0, 105.0]), selected=1,
                              size=2) for l in labels for g in groups])


def metric_rows(metric, subsets, low, high):
    rows = []
    for s, kind in itertools.product(subsets, ["baseline", "spot", "code_over_general", "random_uniform"]):
        v = RNG.uniform(low, high) * (30 if kind == "spot" else 1)
        rows.append(dict(metric=metric, subset=s, mask_kind=kind, value=v, ci_low=0.9 * v, ci_high=1.1 * v))
    return pd.DataFrame(rows)


def tuning_rows():
    """Stage 07's pooled rows of a few arms (tuning_rows.gain_rows' layout)."""
    from spot_utils.analysis.rows import row, to_frame
    rows = []
    for arm, kind, configuration, k, n in (("sparse", "spot", "global", 1.0, 1e4), ("sparse", "random", "global", 1.0, 1e4),
                                            ("lora", None, None, 1.0, 2e4), ("full", None, None, None, 1e6)):
        labels = dict(arm=arm, mask_kind=kind, configuration=configuration, k_percent=k, n_entries=n)
        gain, forget = RNG.uniform(0, 0.1), RNG.uniform(-0.02, 0.05)
        rows += [row(metric="tuning_code_gain", subset="code", value=gain, ci_low=gain - 0.01, ci_high=gain + 0.01,
                     **labels),
                 row(metric="tuning_general_forgetting", subset="english", reference="english", value=forget,
                     ci_low=forget - 0.01, ci_high=forget + 0.01, **labels)]
    return to_frame(rows)


FIGURES = {
    "score_distribution": lambda: plots.score_distribution(
        {l: {"w": torch.randn(50, 50) * 10 ** RNG.uniform(-6, -2)} for l in SCORED + ["english", "aggregate"]}),
    "layer_module_heatmap": lambda: plots.layer_module_heatmap(pd.DataFrame(
        [dict(layer=i, module=m, selected=int(RNG.integers(0, 500)), size=1000) for i in range(30) for m in MODULES]),
        "Where the Coding Spot sits (global top-1% of A)"),
    "pair_heatmap:jaccard": lambda: plots.pair_heatmap(pairs(0.13, 0.17), "value", "Jaccard overlap of top-1% sets",
                                                       label="Jaccard"),
    "pair_heatmap:ratio": lambda: plots.pair_heatmap(pairs(0.9, 150), "value", "Observed / expected overlap",
                                                     null=1, label="observed / expected"),
    "upset": lambda: plots.upset(pd.DataFrame(
        [dict(languages=tuple(SCORED[: d]), degree=d, count=int(10 ** RNG.uniform(2, 6))) for d in range(9, 0, -1)]
        + [dict(languages=(l,), degree=1, count=int(10 ** RNG.uniform(2, 5))) for l in SCORED[1:]]),
        SCORED, "Which languages share their top-1% entries"),
    "rise_curves": lambda: plots.rise_curves(rises(), "Loss after ablation vs k (global spot): code vs English"),
    "rise_curves:destroyed": lambda: plots.rise_curves(rises().assign(destroyed=lambda d: d.value > 10),
                                                       "Loss after ablation vs k (paper): code vs literary English",
                                                       general_label="literary English"),
    "profile_heatmap": lambda: plots.profile_heatmap(profile(MODULES, SCORED + ["spot", "shared core"]),
                                                     "Module types each language's top-1% prefers", "module type"),
    "profile_heatmap:layers": lambda: plots.profile_heatmap(profile(range(30), SCORED), "By layer", "decoder layer"),
    "profile_lines": lambda: plots.profile_lines(profile(range(30), SCORED + ["spot", "shared core"]),
                                                 "Layers each language's top-1% prefers", "decoder layer"),
    "stability_curves": lambda: plots.stability_curves(pd.DataFrame(
        [dict(subset=s, k_percent=k, jaccard=RNG.uniform(0.3, 0.9), jaccard_chance=k / 200)
         for s in ["aggregate"] + SCORED for k in (0.1, 1.0, 5.0)]), "Stability of the top-k between two halves"),
    "damage_plot": lambda: plots.damage_plot(damage_points(), "global: code damage against literary English damage",
                                             general_label="literary English"),
    "cross_ablation_heatmap": lambda: plots.cross_ablation_heatmap(pd.DataFrame(
        [dict(metric="loss_rise", mask_kind=f"specific:{r}", subset=s, value=RNG.uniform(-0.01, 1.5))
         for r in SCORED for s in SCORED + UNSEEN + ["english", "english_doc"]]), "Loss rise per specific region"),
    "metric_by_mask:likelihood": lambda: plots.metric_by_mask(
        metric_rows("loss", ["humaneval", "mbpp"] + [f"mbpp_{l}" for l in ("go", "php", "rust")], 1, 2.5), "loss",
        "Reference-solution NLL per token", "mean NLL per token (nats, 95% CI)"),
    "metric_by_mask:mc": lambda: plots.metric_by_mask(
        metric_rows("acc_norm", ["arc_easy", "arc_challenge", "piqa", "boolq"], 0.25, 0.6), "acc_norm",
        "Multiple-choice accuracy", "acc_norm (95% CI)", chance={"arc_easy": 0.25, "arc_challenge": 0.25,
                                                                   "piqa": 0.5, "boolq": 0.5}),
    "tuning_gain_vs_forgetting": lambda: plots.tuning_gain_vs_forgetting(tuning_rows(), "english", "gain vs forgetting"),
    "tuning_gain_vs_trainable": lambda: plots.tuning_gain_vs_trainable(tuning_rows(), "gain vs trainable entries"),
}


def drawn_texts(fig) -> list[tuple[str, object]]:
    """(text, window extent) of every non-empty text the Agg renderer actually draws."""
    drawn, original = [], Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append((self.get_text(), self.get_window_extent(renderer)))

    Text.draw = record
    try:
        fig.canvas.draw()
    finally:
        Text.draw = original
    return drawn


def overlaps(fig, tolerance: float = 1.0) -> list[tuple[str, str]]:
    texts = drawn_texts(fig)
    found = []
    for (a, ba), (b, bb) in itertools.combinations(texts, 2):
        if (min(ba.x1, bb.x1) - max(ba.x0, bb.x0) > tolerance) and (min(ba.y1, bb.y1) - max(ba.y0, bb.y0) > tolerance):
            found.append((a, b))
    return found


def test_overlap_detection_catches_crowded_tick_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks(range(len(SCORED)), SCORED)  # horizontal names on a 2-inch axis run together
    assert overlaps(fig)
    plt.close(fig)


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_figure_labels_do_not_overlap(name):
    fig = FIGURES[name]()
    try:
        assert overlaps(fig) == [], name
    finally:
        plt.close(fig)


def test_every_figure_function_is_drawn():
    functions = {n for n, f in vars(plots).items() if callable(f) and getattr(f, "__module__", "") == plots.__name__
                 and not n.startswith("_") and n not in {"save", "mask_color", "mask_marker", "language_colors", "short_number", "sample_abs",
                                                  "damage_view"}}
    assert functions == {n.split(":")[0] for n in FIGURES}


def test_mask_colours_are_distinct():
    colors = {k: np.array(to_rgb(c)) for k, c in plots.MASK_COLORS.items()}
    for a, b in itertools.combinations(colors, 2):
        assert np.abs(colors[a] - colors[b]).sum() > 0.25, (a, b)
    languages = plots.language_colors(SCORED + UNSEEN)
    for lang, c in languages.items():  # a language line is never drawn in a mask kind's colour
        assert min(np.abs(np.array(c) - v).sum() for v in colors.values()) > 0.15, lang
    assert len({tuple(c) for c in languages.values()}) == len(languages)


def test_short_numbers_fit_cells():
    assert [plots.short_number(v) for v in (105.2, 12.3, 1.23, 0.0123, 0.0, float("nan"))] == \
        ["105", "12", "1.2", "0.012", "0.0", ""]


def test_damage_plot_lists_each_mask_kind_once_destroyed_or_not():
    points = damage_points()
    points.loc[points.mask_kind == "spot", "destroyed"] = True  # every spot point destroyed
    points.loc[(points.mask_kind == "magnitude") & (points.k_percent == 1.0), "destroyed"] = True  # one of three
    fig = plots.damage_plot(points, "paper: code damage against literary English damage")
    try:
        labels = [t.get_text() for t in fig.legends[0].get_texts()]
        assert len(labels) == len(set(labels)), labels
        assert {"spot", "magnitude", "destroyed (hollow, left out)"} <= set(labels)
    finally:
        plt.close(fig)


def test_log_ratio_axis_labels_more_than_one_tick_within_a_decade():
    df = rises()
    df["value"] = np.where(df.mask_kind == "spot", 5.5, 0.01)  # ratios from 1.01 to 6.5: inside one decade
    df["ci_low"], df["ci_high"] = 0.9 * df.value, 1.1 * df.value
    fig = plots.rise_curves(df, "Loss after ablation vs k")
    try:
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_ylim()
        shown = [t.get_text() for t, v in zip(ax.get_yticklabels(), ax.get_yticks()) if lo <= v <= hi and t.get_text()]
        assert ax.get_yscale() == "log" and len(shown) >= 3, shown
    finally:
        plt.close(fig)


def test_damage_plot_fits_its_axes_to_the_comparable_points_and_labels_the_top_n():
    """Destroyed points far out must not squeeze the comparable ones into a corner: those (with the origin) span at
    least MIN_COVERAGE of each drawn axis; every top-n point carries its n; a point whose status is code_collapse
    (and no other: a large code rise alone is not one) is ringed and named in the legend."""
    points = damage_points()
    points["destroyed"] = points.code_rise > 1.0
    points["collapse"] = False
    points.loc[points.destroyed, ["code_rise", "general_rise"]] *= 40  # destroyed points far beyond the rest
    collapse = dict(points.iloc[0], mask_kind="code_over_general", point="k = 5%", k_percent=5.0, code_rise=0.9,
                    general_rise=0.05, destroyed=False, collapse=True)
    big = dict(collapse, point="k = 2%", k_percent=2.0, code_rise=0.8, collapse=False)  # kept: not ringed
    points = pd.concat([points, pd.DataFrame([collapse, big])], ignore_index=True)
    fig = plots.damage_plot(points, "global: code damage against literary English damage")
    try:
        view, ax = fig.damage_view, fig.axes[0]
        comp = points[~points.destroyed & ~points.collapse & (points.mask_kind != "random_uniform")]
        xs, ys = np.r_[0, np.log1p(comp.general_rise)], np.r_[0, np.log1p(comp.code_rise)]
        for values, (lo, hi), (alo, ahi) in ((xs, view["xlim"], ax.get_xlim()), (ys, view["ylim"], ax.get_ylim())):
            assert (lo, hi) == (alo, ahi)
            assert lo <= values.min() and values.max() <= hi  # every comparable point is inside the axes
            assert np.ptp(values) / (hi - lo) >= plots.MIN_COVERAGE
        x, y = np.log1p(points.general_rise), np.log1p(points.code_rise)
        beyond = ~(x.between(*view["xlim"]) & y.between(*view["ylim"]))
        assert min(view["coverage"]) >= plots.MIN_COVERAGE and view["outside"] == int(beyond.sum())
        assert beyond[points.destroyed].all()
        rings = [c for c in ax.collections if c.get_label() == "code collapses, general intact"]
        assert len(rings) == 1 and np.allclose(rings[0].get_offsets(), [[np.log1p(0.05), np.log1p(0.9)]])
        shown = {t.get_text() for a in fig.axes for t in a.texts}
        assert {f"top {n:g}" for n in points[points.mask_kind == "top_entries"].n_entries} <= shown
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert "code collapses, general intact" in legend and len(legend) == len(set(legend))
    finally:
        plt.close(fig)


def test_damage_plot_gives_each_mask_kind_its_own_colour_and_marker():
    kinds = ["spot", "top_entries", "spot_norms", "random_uniform", "random", "magnitude", "magnitude_global",
             "code_over_general", "code_minus_general", "general"]  # every kind a damage plot can show
    assert len({plots.mask_marker(k) for k in kinds}) == len(kinds)
    assert len({plots.mask_color(k) for k in kinds}) == len(kinds)



@pytest.mark.parametrize("n_languages", [11, 20])
def test_profile_lines_no_two_series_share_a_colour_and_a_marker_or_line_style(n_languages):
    """Notebook 05's layer plot: two lines of alike colours (RGB distance below 0.5, e.g. two shades of one hue)
    differ in marker and in line style; no language line takes a mask kind's colour."""
    labels = (SCORED + UNSEEN + [f"lang{i}" for i in range(n_languages)])[:n_languages] + ["spot", "shared core"]
    fig = plots.profile_lines(profile(range(12), labels), "Layers each language's top-1% prefers", "decoder layer")
    try:
        series = [line for line in fig.axes[0].get_lines() if line.get_label() in labels]
        assert [line.get_label() for line in series] == labels
        for a, b in itertools.combinations(series, 2):
            if np.abs(np.array(to_rgb(a.get_color())) - np.array(to_rgb(b.get_color()))).sum() < 0.5:
                assert a.get_marker() != b.get_marker() and a.get_linestyle() != b.get_linestyle(), \
                    (a.get_label(), b.get_label(), a.get_color(), b.get_color(), a.get_marker(), a.get_linestyle())
        mask_colours = {to_hex(c) for c in plots.MASK_COLORS.values()}
        for line in series[:n_languages]:
            assert to_hex(line.get_color()) not in mask_colours, line.get_label()
    finally:
        plt.close(fig)
