"""reports/index.html: every run in reports/ with its headline numbers and links to its stage reports; and
lookups of other runs for cross-model comparisons.

    python -m spot_utils.report_index [reports_dir]
"""
from __future__ import annotations

import argparse
import html
import math
from pathlib import Path

import pandas as pd

from . import structure
from .io import read_json, write_text
from .masks import load_masks
from .models import CORPUS_NOTE, provenance
from .metrics import to_frame
from .params import CODE_LANGUAGES, GENERAL_LANGUAGES
from .paths import REPORTS_DIR, RUNS_DIR
from .runs import mask_path

STAGES = ("01_scoring", "02_aggregation", "03_selection", "04_ablation", "05_overlap")
HEADLINE_KINDS = ("spot", "code_over_general", "random_uniform")
HEADLINE_METRICS = ("code_rise", "general_rise", "selectivity")
LOSS_SUBSETS = CODE_LANGUAGES + GENERAL_LANGUAGES  # held-out loss subsets (not the likelihood sets)


def headline(rows: list[dict], k_percent: float | None = None) -> dict:
    """Headline numbers of one run's metrics rows at k (default 1% if measured, else the largest k):
    mean baseline loss over the code and general loss subsets, and code_rise (subset 'code') / general_rise /
    selectivity of the spot, code_over_general and random_uniform (global granularity, zero mode, mean over seeds)."""
    df = to_frame(rows)
    ks = sorted(float(k) for k in df.k_percent.dropna().unique())
    k = k_percent if k_percent is not None else (1.0 if 1.0 in ks else (ks[-1] if ks else None))
    out = {"k_percent": k, "model": next((m for m in df.model.dropna()), None)}
    base = df[(df.mask_kind == "baseline") & (df.metric == "loss") & df.subset.isin(LOSS_SUBSETS)]
    out["baseline_loss"] = float(base.value.mean()) if len(base) else None
    at_k = df[(df.k_percent == k) & (df.granularity.isna() | (df.granularity == "global"))
              & (df["mode"].isna() | (df["mode"] == "zero"))
              & ~((df.metric == "code_rise") & (df.subset != "code"))]  # not the code:scored / code:unseen parts
    for kind in HEADLINE_KINDS:
        for metric in HEADLINE_METRICS:
            v = at_k[(at_k.mask_kind == kind) & (at_k.metric == metric)].value.dropna()
            out[f"{kind}.{metric}"] = float(v.mean()) if len(v) else None
    return out


def collect(reports_dir: str | Path = REPORTS_DIR) -> pd.DataFrame:
    """One row per run folder in reports/: name, model, seconds, headline numbers and which stage reports exist."""
    rows = []
    for run in sorted(p for p in Path(reports_dir).iterdir() if p.is_dir()):
        stages = [s for s in STAGES if (run / f"{s}.html").is_file()]
        if not stages and not (run / "metrics.json").is_file():
            continue
        manifest = read_json(run / "manifest.json") if (run / "manifest.json").is_file() else {}
        params = manifest.get("params", {})
        row = dict(run=run.name, model=params.get("model"), languages=len(params.get("languages", [])) or None,
                   seconds=sum(manifest.get("stage_seconds", {}).values()) or None, stages=stages,
                   git_commit=manifest.get("git_commit"))
        if (run / "metrics.json").is_file():
            h = headline(read_json(run / "metrics.json"))
            row.update({k: v for k, v in h.items() if k != "model" or row["model"] is None})
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


def index_html(table: pd.DataFrame) -> str:
    """The index page for a table from collect()."""
    cols = ["model", "languages", "seconds", "k_percent", "baseline_loss"] + \
        [f"{k}.{m}" for k in HEADLINE_KINDS for m in HEADLINE_METRICS]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run"] + cols + ["stage reports"])
    body = []
    for r in table.to_dict("records"):
        links = " · ".join(f'<a href="{html.escape(r["run"])}/{s}.html">{s}</a>' for s in r["stages"])
        cells = "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols)
        body.append(f"<tr><td><b>{html.escape(r['run'])}</b></td>{cells}<td>{links}</td></tr>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Coding Spot runs</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:13px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td:first-child,td:last-child{text-align:left}"
        "th{background:#f3f3f3}</style></head><body>\n<h1>Coding Spot: runs</h1>\n"
        "<p>One row per run in <code>reports/</code>. Rises are relative loss rises r = L_ablated / L_baseline − 1 "
        "at k (percent of scoped entries, global granularity, zero ablation); <i>code</i> is the mean over code "
        "languages, <i>general</i> is English prose; selectivity = code rise / general rise (only where both exceed "
        "1%), to be read against random_uniform's. – means not measured in that run.</p>\n"
        f"<table><tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n"
        + "".join(f"<p>{html.escape(provenance(m))}</p>\n" for m in dict.fromkeys(table.get("model", [])) if m)
        + f"<p>{html.escape(CORPUS_NOTE)}</p>\n</body></html>\n")


def write_index(reports_dir: str | Path = REPORTS_DIR) -> Path:
    """Write reports/index.html atomically and return its path."""
    out = Path(reports_dir) / "index.html"
    write_text(out, index_html(collect(reports_dir)))
    return out


def runs_with_mask(kind: str, k_percent: float, granularity: str = "global", exclude: str | None = None,
                   runs_dir: str | Path = RUNS_DIR) -> dict[str, Path]:
    """{run name: mask path} of every run folder in runs/ that holds the mask `kind` at k (e.g. 'spot', 1.0)."""
    found = {}
    root = Path(runs_dir)
    if root.is_dir():
        for run in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != exclude):
            path = mask_path(run, kind, k_percent, granularity, root=root)
            if path.is_file():
                found[run] = path
    return found


def cross_model(run_names: list[str], k_percent: float, runs_dir: str | Path = RUNS_DIR,
                reports_dir: str | Path = REPORTS_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare the global spot at k across runs (models): (one summary row per run, module and depth profiles
    labelled 'run (model)').

    Summary: model, spot entries, share in norm/bias vectors, shared core and union of the per-language top-k,
    and the code / general loss rise at 1% of the spot and of random_uniform where the run's metrics.json has them.
    """
    rows, spots = [], {}
    for run in run_names:
        spot, manifest = load_masks(mask_path(run, "spot", k_percent, root=runs_dir))
        row = dict(run=run, model=manifest.get("model"), **{f"spot_{k}": v for k, v in structure.summary(spot).items()})
        for region in ("shared", "union"):
            path = mask_path(run, region, k_percent, root=runs_dir)
            row[region] = load_masks(path)[1]["total"] if path.is_file() else None
        row["shared_over_union"] = row["shared"] / row["union"] if row["shared"] is not None and row["union"] else None
        metrics_path = Path(reports_dir) / run / "metrics.json"
        h = headline(read_json(metrics_path), 1.0) if metrics_path.is_file() else {}
        for kind in ("spot", "random_uniform"):  # the collapse at 1%, beside random damage of the same size
            row[f"{kind}_code_rise_at_1pct"] = h.get(f"{kind}.code_rise")
            row[f"{kind}_general_rise_at_1pct"] = h.get(f"{kind}.general_rise")
        rows.append(row)
        spots[f"{run} ({row['model']})" if row["model"] and row["model"] != run else run] = spot
    profiles = pd.concat([structure.profile(spots, "module").assign(by="module"),
                          structure.profile(spots, "depth").assign(by="depth")], ignore_index=True)
    return pd.DataFrame(rows), profiles


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports_dir", nargs="?", default=str(REPORTS_DIR))
    print("index written to", write_index(parser.parse_args(argv).reports_dir))


if __name__ == "__main__":
    main()
