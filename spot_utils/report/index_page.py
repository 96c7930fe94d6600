"""reports/index.html: every run in reports/ with its headline numbers and links to all its files.

    python -m spot_utils.report_index [reports_dir] [--readme README.md]
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
import subprocess

import pandas as pd

from ..analysis.destroyed import COLLAPSE_LABEL
from ..analysis.metric_names import MATCHED_EXCESS
from ..analysis.rows import is_missing
from ..base.io import read_json, write_text
from ..base.paths import REPO_ROOT, REPORTS_DIR
from ..data.models import CORPUS_NOTE, provenance
from ..experiment.stages import STAGES
from ..analysis.rows import to_frame
from .headline import run_headline
from .pages import VIEWPORT, stage_problems
from .plots import damage_plot
from .tables import (collapse_points, conclusion, damage_frame, model_summary, reference_label, sensitivity,
                     verdict, verdict_basis)

FINDING_KINDS = ("spot", "top_entries", "code_over_general")  # what the index's figure shows beside random_uniform


def _git(folder: Path, *args: str) -> str | None:
    """Output of a git command run in `folder`, None outside a git checkout."""
    try:
        proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _commit_date(run: Path, commit: str) -> str | None:
    """The date of a commit, from the checkout the run folder is in, else from the repository's."""
    return _git(run, "show", "-s", "--format=%cs", commit) or _git(REPO_ROOT, "show", "-s", "--format=%cs", commit)


def run_files(run: Path) -> dict[str, list[str]]:
    """Every file of a report folder by kind, relative to the folder: pages, notebooks, data, figures."""
    files = sorted(p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file())
    kinds = {"pages": [], "notebooks": [], "data": [], "figures": [], "other": []}
    for f in files:
        suffix = Path(f).suffix
        kind = ("pages" if suffix == ".html" else "notebooks" if suffix == ".ipynb" else "data"
                if suffix in (".json", ".csv") else "figures" if suffix in (".png", ".svg") else "other")
        kinds[kind].append(f)
    stage_order = {s: i for i, s in enumerate(STAGES)}
    for kind in ("pages", "notebooks"):
        kinds[kind].sort(key=lambda f: stage_order.get(Path(f).stem, len(STAGES)))
    return kinds


def collect(reports_dir: str | Path = REPORTS_DIR) -> pd.DataFrame:
    """One row per run folder in reports/: name, model, seconds, code commit and its date, whether the run is only
    local (not tracked by git), its files, headline numbers, which stage reports exist and the stages the manifest
    marks failed or stale."""
    rows = []
    for run in sorted(p for p in Path(reports_dir).iterdir() if p.is_dir()):
        stages = [s for s in STAGES if (run / f"{s}.html").is_file()]
        if not stages and not (run / "metrics.json").is_file():
            continue
        manifest = read_json(run / "manifest.json") if (run / "manifest.json").is_file() else {}
        params = manifest.get("params", {})
        commit = manifest.get("git_commit")
        tracked = _git(run, "ls-files", "--", ".")
        row = dict(run=run.name, model=params.get("model"), languages=len(params.get("languages", [])) or None,
                   seconds=sum(manifest.get("stage_seconds", {}).values()) or None, stages=stages,
                   git_commit=commit, earlier_commits=earlier_commits(manifest), local=tracked == "",
                   commit_date=_commit_date(run, commit.removesuffix("+dirty")) if commit else None,
                   files=run_files(run), problems=stage_problems(run))
        if (run / "metrics.json").is_file():
            metrics = read_json(run / "metrics.json")
            h = run_headline(metrics)
            row.update({k: v for k, v in h.items() if k != "model" or row["model"] is None})
            row.update(finding(metrics, row["model"] or run.name))
        rows.append(row)
    return pd.DataFrame(rows)


def finding(rows: list[dict], model: str) -> dict:
    """What the index says on a run with the damage-matched comparison (else {}): the sentence on the model
    (tables.model_summary, as in the README), per configuration and reference the verdict with the points it rests
    on, the points where code collapses with general text intact (tables.collapse_points), each verdict's
    sensitivity to the destroyed rule (tables.sensitivity), and a small damage-matched figure (the global configuration where there is one, the first reference) as
    a PNG data URI."""
    df = to_frame(rows)
    if not (df.metric == MATCHED_EXCESS).any():
        return {}
    configurations, references = list(dict.fromkeys(df.configuration.dropna())), list(dict.fromkeys(df.reference.dropna()))
    shown = "global" if "global" in configurations else configurations[0]
    fig = damage_plot(damage_frame(df, shown, references[0]), f"{model}, {shown}: code against "
                      f"{reference_label(references[0])} damage", reference_label(references[0]),
                      kinds=FINDING_KINDS, figsize=(8.4, 4.6))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    fig.clf()
    return {"summary": model_summary(df, configurations, references, model),
            "conclusions": [conclusion(df, c, references) for c in configurations],
            "bases": {c: {reference_label(r): (verdict(df, c, r), verdict_basis(df, c, r)) for r in references}
                      for c in configurations},
            "collapses": {c: {reference_label(r): collapse_points(df, c, r) for r in references} for c in configurations},
            "sensitivity": {c: {reference_label(r): sensitivity(df, c, r) for r in references} for c in configurations},
            "figure": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()}


def earlier_commits(manifest: dict) -> dict[str, list[str]]:
    """Commits other than the run's last (git_commit) that stages ran at, each with its stages in order: a run
    finished in several sittings at different code."""
    groups = {}
    for stage, commit in manifest.get("stage_commits", {}).items():
        if commit and commit != manifest.get("git_commit"):
            groups.setdefault(commit, []).append(stage)
    return groups


def format_seconds(s) -> str:
    """Durations as the README writes them: '42 s', '15 min 27 s', '2 h 05 min'."""
    if is_missing(s):
        return "–"
    s = round(float(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _fmt(v) -> str:
    if is_missing(v):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


def _short(text: str, n: int = 300) -> str:
    return text if len(text) <= n else text[:n] + " …"


def _links(run: str, files: list[str], label=lambda f: f) -> str:
    return " · ".join(f'<a href="{html.escape(run)}/{html.escape(f)}">{html.escape(label(f))}</a>' for f in files)


LEGEND = ("<i>Verdict</i>: does switching off the spot hurt code <i>more</i> or <i>less</i> than random damage "
          "(random_uniform) that hurts general text equally (Holm p &lt; 0.05), or is the difference <i>none</i> "
          "detected, or has it <i>no point</i> to compare (every point destroyed: the general-text reference at or "
          "above ln |V|, the mean loss of a uniform guess over the vocabulary; code collapsed; or beyond random damage's "
          "range)? <i>Code collapses, general text intact</i>: the median code loss at or above ln |V| while the "
          "reference's is below it, the outcome a code-specific region predicts; its rises are shown, it has no "
          "matched excess. Each verdict says whether it changes under the old rule that counted a point destroyed "
          "when any one code subset reached ln |V|. Each verdict is followed by the point it rests on and its matched "
          "excess (ln(1 + code rise) above random damage's curve) with 95% interval. <i>Time</i>: compute recorded over the "
          "stages; ≥ where a stage ran in earlier sittings that the manifest does not record. Definitions: "
          "docs/METHOD.md; numbers: each run's 04_ablation page.")
CSS = ("body{font-family:sans-serif;margin:1.5em auto;max-width:1240px;padding:0 12px;line-height:1.4}"
       "table{border-collapse:collapse;font-size:13px;width:100%}"
       "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
       "th{background:#f3f3f3;font-weight:600}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em;font-size:14px}"
       "h2{margin-top:1.4em;border-bottom:1px solid #ddd}.bad{color:#a00;font-weight:600}"
       ".findings{display:flex;flex-wrap:wrap;gap:16px}.finding{flex:1 1 560px;min-width:0;border:1px solid #ddd;"
       "padding:8px 12px;border-radius:4px}.finding img{width:100%;height:auto}.finding ul{padding-left:1.2em}"
       ".legend{font-size:13px;color:#333}.wide{overflow-x:auto}dd{overflow-wrap:anywhere}"
       "@media (max-width:700px){table,thead,tbody,tr,td,th{display:block;width:auto}tr:first-child{display:none}"
       "tr{border:1px solid #ccc;margin-bottom:8px}td{border:none;border-top:1px solid #eee}"
       "td::before{content:attr(data-label) \": \";font-weight:600}body{padding:0 8px}}")


def _finding_card(r: dict) -> str:
    """A run's finding: its figure, the computed sentence and per configuration the verdict and its points, where
    code collapses with general text intact, and the verdict's sensitivity line."""
    bases = r.get("bases") if isinstance(r.get("bases"), dict) else {}
    collapses = r.get("collapses") if isinstance(r.get("collapses"), dict) else {}
    lines = r.get("sensitivity") if isinstance(r.get("sensitivity"), dict) else {}

    def extra(c, ref):
        hits = collapses.get(c, {}).get(ref) or []
        line = lines.get(c, {}).get(ref)
        return ((f"; {html.escape(COLLAPSE_LABEL)} at {html.escape('; '.join(hits))}" if hits else "")
                + (f" <i>{html.escape(line)}</i>" if line else ""))
    items = "".join(f"<li><b>{html.escape(c)}</b>: " + "; ".join(
        f"against {html.escape(ref)} <b>{html.escape(v)}</b>" + (f" ({html.escape(', '.join(points))})" if points else "")
        + extra(c, ref) for ref, (v, points) in by_ref.items()) + "</li>" for c, by_ref in bases.items())
    return (f'<div class="finding"><h3>{html.escape(str(r.get("model") or r["run"]))} '
            f'<small>(<a href="{html.escape(r["run"])}/04_ablation.html">{html.escape(r["run"])}</a>)</small></h3>'
            f'<img src="{r["figure"]}" alt="damage-matched figure of {html.escape(r["run"])}">'
            f"<p>{html.escape(r['summary'])}</p><ul>{items}</ul></div>")


def _time_cell(r: dict) -> str:
    """Recorded compute over the stages; '≥' where stages ran in earlier sittings at other code."""
    earlier = r.get("earlier_commits") if isinstance(r.get("earlier_commits"), dict) else {}
    return ("≥ " if earlier else "") + format_seconds(r.get("seconds"))


def index_html(table: pd.DataFrame, finding_runs: list[str] | None = None) -> str:
    """The index page for a table from collect(): the finding first (per run in finding_runs, default every run
    with one: a damage-matched figure, the computed sentence and the verdicts with their points), a short legend,
    a summary table of every run that reads at 1,280 px and on a phone, then every run's files."""
    records = table.to_dict("records")
    head = ["run", "model", "languages", "time", "code commit", "baseline loss", "verdict on the spot (point it rests on)"]
    body, sections = [], []
    for r in records:
        name = html.escape(r["run"]) + (" <i>(local, not committed)</i>" if r.get("local") else "")
        problems = r.get("problems") if isinstance(r.get("problems"), dict) else {}
        flags = "".join(f'<br><span class="bad">{html.escape(s)} {html.escape(str(p["status"]))}</span>'
                        for s, p in problems.items())
        commit = r.get("git_commit")
        commit_cell = "–" if not commit else (f"<code>{html.escape(commit[:7])}</code>"
                                             + ("+dirty" if commit.endswith("+dirty") else "")
                                             + (f" {html.escape(r['commit_date'])}" if r.get("commit_date") else ""))
        earlier = r.get("earlier_commits") if isinstance(r.get("earlier_commits"), dict) else {}
        commit_cell += "".join(f"<br>{html.escape(', '.join(s[:2] for s in stages))}: "
                               f"<code>{html.escape(c[:7])}</code>" for c, stages in earlier.items())
        bases = r.get("bases") if isinstance(r.get("bases"), dict) else {}
        verdicts = r.get("spot.verdicts") if isinstance(r.get("spot.verdicts"), dict) else {}
        verdict_cell = "<br>".join(
            f"{html.escape(c)}: " + " / ".join(html.escape(v) + (f" ({html.escape(points[0].split(':')[0])})"
                                                                  if points else "") for v, points in by_ref.values())
            for c, by_ref in bases.items()) or "<br>".join(
            f"{html.escape(c)}: {html.escape(' / '.join(v))}" for c, v in verdicts.items()) or "–"
        cells = [f'<a href="#{html.escape(r["run"])}"><b>{name}</b></a>{flags}', _fmt(r.get("model")),
                 _fmt(r.get("languages")), _time_cell(r), commit_cell, _fmt(r.get("baseline_loss")), verdict_cell]
        body.append("<tr>" + "".join(f'<td data-label="{html.escape(h)}">{c}</td>' for h, c in zip(head, cells))
                    + "</tr>")
        files = r.get("files") or {}
        pages = " · ".join(f'<a href="{html.escape(r["run"])}/{html.escape(f)}">{html.escape(Path(f).stem)}</a>'
                           + (f' <span class="bad">({html.escape(str(problems[Path(f).stem]["status"]))})</span>'
                              if Path(f).stem in problems else "") for f in files.get("pages", []))
        parts = [("stage reports", pages),
                 ("executed notebooks", _links(r["run"], files.get("notebooks", []))),
                 ("data", _links(r["run"], files.get("data", []))),
                 ("figures", _links(r["run"], files.get("figures", []), lambda f: Path(f).stem))]
        parts += [("other", _links(r["run"], files["other"]))] if files.get("other") else []
        parts += [("stage status", "<br>".join(
            f'<span class="bad">{html.escape(s)} {html.escape(str(p["status"]))}</span>'
            + (f": <code>{html.escape(_short(p['error']))}</code>" if p.get("error") else
               " (an earlier stage ran again after it: rerun it)" if p["status"] == "stale" else "")
            for s, p in problems.items()))] if problems else []
        sections.append(f'<h2 id="{html.escape(r["run"])}">{name}</h2>\n<dl>'
                        + "".join(f"<dt>{t}</dt><dd>{v or '–'}</dd>" for t, v in parts) + "</dl>")
    shown = [r for r in records if isinstance(r.get("figure"), str)
             and (finding_runs is None or r["run"] in finding_runs)]
    cards = ('<div class="findings">' + "".join(_finding_card(r) for r in shown) + "</div>\n") if shown else ""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>" + VIEWPORT
        + f"<title>Coding Spot: runs</title><style>{CSS}</style></head><body>\n<h1>Coding Spot: runs</h1>\n"
        "<p>Does switching off a causal language model's Coding Spot (the parameters whose importance on code is "
        "largest) hurt code more than random damage that hurts general text just as much? Each figure plots code "
        "damage against general-text damage: random damage's curve with its seed band, the spot's points (its top n "
        "entries and its k grid) and the contrastive region code_over_general; above the curve a mask hurts code "
        "more than equal random damage.</p>\n" + cards
        + f'<p class="legend">{LEGEND}</p>\n<div class="wide"><table><tr>'
        + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>\n" + "\n".join(body)
        + "\n</table></div>\n" + "\n".join(sections) + "\n"
        + "".join(f"<p>{html.escape(provenance(m))}</p>\n" for m in dict.fromkeys(table.get("model", [])) if m)
        + f"<p>{html.escape(CORPUS_NOTE)}</p>\n</body></html>\n")


def write_index(reports_dir: str | Path = REPORTS_DIR, finding_runs: list[str] | None = None) -> Path:
    """Write reports/index.html atomically (the finding of finding_runs, default every run) and return its path."""
    out = Path(reports_dir) / "index.html"
    write_text(out, index_html(collect(reports_dir), finding_runs))
    return out
