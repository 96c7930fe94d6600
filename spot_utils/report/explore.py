"""06_explore's view of a finished run, read from reports/<run>/ alone: the choices a run offers, the view of one
choice (collapse curves, damage-matched table, per-subset loss rise, layer x module map) and the widgets that
redraw it. Each redraw replaces an output's whole content with a finished PNG, so a change never leaves a blank or
half-drawn figure behind.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from functools import lru_cache
import io
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from ..analysis import rows as metrics
from ..analysis.metric_names import GENERAL_RISE, LOSS_RISE, MATCHED_EXCESS
from ..base.io import read_json
from ..base.paths import REPORTS_DIR, shown
from . import plots
from . import tables


def runs_available(reports_dir: Path = REPORTS_DIR) -> list[str]:
    """Every run folder in reports/ with metric rows, sorted."""
    return sorted(p.parent.name for p in Path(reports_dir).glob("*/metrics.json"))


def default_run(preferred: str, reports_dir: Path = REPORTS_DIR) -> str:
    """`preferred` when reports/<preferred>/ has metric rows, else the first run that has them (a fresh clone has
    the committed runs only)."""
    runs = runs_available(reports_dir)
    if preferred in runs:
        return preferred
    if not runs:
        raise FileNotFoundError(f"no run with metrics.json in {shown(reports_dir)}: run stage 04_ablation first "
                                "(python -m spot_utils.pipeline params/<run>.yaml)")
    return runs[0]


def load(run: str, reports_dir: Path = REPORTS_DIR):
    """(metric rows, run parameters, layer x module table or None) of reports/<run>/ (read once per session: the
    view does not change them)."""
    return _read(run, Path(reports_dir))


@lru_cache(maxsize=8)
def _read(run: str, reports_dir: Path):
    folder = reports_dir / run
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"{shown(folder / 'metrics.json')} is missing: run stage 04_ablation for run "
                                f"'{run}' first (python -m spot_utils.pipeline params/<run>.yaml)")
    rows = pd.DataFrame(read_json(folder / "metrics.json"))
    params = read_json(folder / "manifest.json").get("params", {}) if (folder / "manifest.json").is_file() else {}
    table = folder / "03_layers_modules.csv"
    return rows, params, pd.read_csv(table) if table.is_file() else None


def configurations(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """The run's configurations: the rows' `configuration` field where present, else their granularity."""
    column = "configuration" if rows.get("configuration", pd.Series(dtype=object)).notna().any() else "granularity"
    return column, list(dict.fromkeys(rows[column].dropna()))


def references(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """General-text references of the general rise: the rows' `reference` field where present, else its subsets."""
    if rows.get("reference", pd.Series(dtype=object)).notna().any():
        return "reference", list(dict.fromkeys(rows.reference.dropna()))
    return "subset", sorted(rows[rows.metric == GENERAL_RISE].subset.dropna().unique())


def choices(rows: pd.DataFrame, params: dict, kind: str = "spot") -> dict:
    """What a run offers and what the view shows by default: {name: (options, default)} for configuration, mask
    kind, k and reference (the first configuration and reference, `kind` if the run has it, the run's k_detail)."""
    configs, refs = configurations(rows)[1], references(rows)[1]
    kinds = sorted(set(rows.mask_kind.dropna()) - {"baseline"})
    ks = sorted(float(k) for k in rows.k_percent.dropna().unique())
    k = float(params["k_detail"]) if params.get("k_detail") is not None and float(params["k_detail"]) in ks else ks[-1]
    return {"configuration": (configs, configs[0]), "kind": (kinds, kind if kind in kinds else kinds[0]),
            "k": (ks, k), "reference": (refs, refs[0] if refs else None)}


@dataclass
class View:
    """One choice drawn: the heading, the collapse-curve and layer-map figures (None where the run has no data for
    them, with the reason in `notes`) and the tables."""
    heading: str
    curves: object = None
    layers: object = None
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def view(run: str, configuration=None, kind: str = "spot", k=None, reference=None,
         reports_dir: Path = REPORTS_DIR) -> View:
    """Collapse curves, damage-matched comparison, per-subset loss rise and layer x module map of one choice (a
    choice the run does not offer falls back to its default)."""
    rows, params, layers = load(run, reports_dir)
    options = choices(rows, params, kind)
    configuration, kind, k, reference = (value if value in options[name][0] else options[name][1] for name, value in
                                         (("configuration", configuration), ("kind", kind), ("k", k),
                                          ("reference", reference)))
    column, ref_column = configurations(rows)[0], references(rows)[0]
    mine = rows[rows[column].isna() | (rows[column] == configuration)]
    if ref_column == "reference":
        mine = mine[mine.reference.isna() | (mine.reference == reference)]
    else:  # general rises measured on another reference are left out
        mine = mine[(mine.metric != GENERAL_RISE) | (mine.subset == reference)]
    out = View(f"run {run} · {column} {configuration} · mask kind {kind} · k = {k:g}% · general reference {reference}")
    rise = tables.rise_frame(mine.to_dict("records"))
    kinds = [kind] + [c for c in ("random_uniform", "random") if c != kind and c in set(rise.mask_kind)]
    if len(rise[rise.mask_kind.isin(kinds)]):
        out.curves = plots.rise_curves(rise[rise.mask_kind.isin(kinds)],
                                       f"{run}: loss after ablation vs k ({configuration})",
                                       general_label=tables.reference_label(reference) if reference else "general text")
    else:
        out.notes.append(f"No code / general rises for {kind} in this configuration.")
    matched = mine[(mine.metric == MATCHED_EXCESS) & (mine.seed.isna() if "seed" in mine else True)]
    if len(matched):
        points = [f"top {n:,.0f}" if kind_ == "top_entries" else f"{k_:g}% ({n:,.0f} entries)"
                  for kind_, k_, n in zip(matched.mask_kind, matched.k_percent, matched.n_entries)]
        out.tables.append(("Damage-matched comparison (matched_excess: the mask's code rise beyond random damage of "
                           "equal general damage)", metrics.ci_pivot(matched.assign(point=points),
                                                                     ["mask_kind", "point"], "subset")))
    else:
        out.notes.append("Damage-matched comparison: absent in this run (no matched_excess rows in its metrics.json).")
    at = mine[(mine.metric == LOSS_RISE) & (mine.k_percent == k) & mine.mask_kind.isin(kinds)
              & (mine["mode"].fillna("zero") == "zero")]
    if len(at):
        out.tables.append((f"Loss rise per evaluated subset at k = {k:g}% (95% interval; seeds averaged)",
                           metrics.ci_pivot(at, "subset", "mask_kind")))
    else:
        out.notes.append(f"No per-subset loss rise for {kind} at k = {k:g}%.")
    grid = None if layers is None else layers[(layers.kind == kind) & (layers.k_percent == k)]
    if grid is not None and len(grid):
        out.layers = plots.layer_module_heatmap(grid, f"{run}: where {kind} sits (global top-{k:g}%)")
    else:
        mapped = ", ".join(sorted(set(layers.kind))) if layers is not None else "none"
        out.notes.append(f"Layer x module map: no summary of {kind} at k = {k:g}% in reports/{run}/"
                         f"03_layers_modules.csv (mapped kinds: {mapped}).")
    return out


def _png(fig) -> dict:
    """A finished figure as one display_data output (the figure is closed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<figure>"}}


def _text(html: str, plain: str) -> dict:
    return {"output_type": "display_data", "metadata": {}, "data": {"text/html": html, "text/plain": plain}}


class Explorer:
    """Dropdowns for run, configuration, mask kind, k and reference, and three outputs (collapse curves, layer x
    module map, tables) that every change redraws. Changing the run resets the other dropdowns to the run's
    defaults, the values the view uses, and draws once."""

    def __init__(self, run: str, kind: str = "spot", reports_dir: Path = REPORTS_DIR):
        import ipywidgets as widgets  # deferred: ipywidgets, only for the interactive notebook
        self.reports_dir, self.kind = Path(reports_dir), kind
        self.pick = {"run": widgets.Dropdown(options=runs_available(reports_dir), value=run, description="run"),
                     "configuration": widgets.Dropdown(description="configuration"),
                     "kind": widgets.Dropdown(description="mask kind"), "k": widgets.Dropdown(description="k (%)"),
                     "reference": widgets.Dropdown(description="reference")}
        self.curves, self.layers, self.tables = widgets.Output(), widgets.Output(), widgets.Output()
        self.redraws, self._holding = 0, False
        self._set_run()
        self.pick["run"].observe(lambda _: self._set_run(), names="value")
        for name in ("configuration", "kind", "k", "reference"):
            self.pick[name].observe(lambda _: self.redraw(), names="value")
        picks = list(self.pick.values())
        self.widget = widgets.VBox([widgets.HBox(picks[:3]), widgets.HBox(picks[3:]), self.curves, self.layers,
                                    self.tables])

    def _set_run(self) -> None:
        """The other dropdowns' options and values from the run chosen, then one redraw."""
        rows, params, _ = load(self.pick["run"].value, self.reports_dir)
        self._holding = True
        try:
            for name, (options, default) in choices(rows, params, self.kind).items():
                self.pick[name].options = options
                self.pick[name].value = default
        finally:
            self._holding = False
        self.redraw()

    def redraw(self) -> None:
        """Draw the view of the current choice into the three outputs, each replaced whole."""
        if self._holding:
            return
        v = view(self.pick["run"].value, self.pick["configuration"].value, self.pick["kind"].value,
                 self.pick["k"].value, self.pick["reference"].value, self.reports_dir)
        notes = "".join(f"<p>{n}</p>" for n in v.notes)
        self.curves.outputs = (_png(v.curves),) if v.curves is not None else (_text(notes, "\n".join(v.notes)),)
        self.layers.outputs = (_png(v.layers),) if v.layers is not None else (_text(notes, "\n".join(v.notes)),)
        self.tables.outputs = (_text(f"<p><b>{v.heading}</b></p>" + notes + "".join(
            f"<p>{title}:</p>" + table.to_html() for title, table in v.tables), v.heading),)
        self.redraws += 1
