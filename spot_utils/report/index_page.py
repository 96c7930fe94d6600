"""reports/index.html: every run in reports/ with its headline numbers and links to all its files.

    python -m spot_utils.report_index [reports_dir] [--readme README.md]
"""
from __future__ import annotations

import html
from pathlib import Path
import subprocess

import pandas as pd

from ..analysis.rows import format_rise, is_missing
from ..base.io import read_json, write_text
from ..base.paths import REPO_ROOT, REPORTS_DIR
from ..data.models import CORPUS_NOTE, provenance
from ..experiment.stages import STAGES
from .headline import HEADLINE_KINDS, run_headline
from .pages import stage_problems


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
            h = run_headline(read_json(run / "metrics.json"))
            row.update({k: v for k, v in h.items() if k != "model" or row["model"] is None})
        rows.append(row)
    return pd.DataFrame(rows)


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


def index_html(table: pd.DataFrame) -> str:
    """The index page for a table from collect(): a summary table that fits a 1,280 px window, then every run's
    files."""
    head = ["run", "model", "languages", "time", "code commit", "k", "baseline loss"] + \
        [f"{k}: code / English rise" for k in HEADLINE_KINDS] + ["spot vs equal random damage"]
    body, sections = [], []
    for r in table.to_dict("records"):
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
        k = r.get("k_percent")
        cells = [f'<a href="#{html.escape(r["run"])}"><b>{name}</b></a>{flags}', _fmt(r.get("model")), _fmt(r.get("languages")),
                 format_seconds(r.get("seconds")), commit_cell, "–" if is_missing(k) else f"{k:g}%",
                 _fmt(r.get("baseline_loss"))]
        cells += [f"{format_rise(r.get(f'{kind}.code_rise'))} / {format_rise(r.get(f'{kind}.general_rise'))}"
                  + (" †" if r.get(f"{kind}.destroyed") is True else "") for kind in HEADLINE_KINDS]
        verdicts = r.get("spot.verdicts") if isinstance(r.get("spot.verdicts"), dict) else {}
        cells.append("<br>".join(f"{html.escape(c)}: {html.escape(' / '.join(v))}" for c, v in verdicts.items()) or "–")
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
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
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>Coding Spot: runs</title><style>"
        "body{font-family:sans-serif;margin:1.5em auto;max-width:1240px;padding:0 12px;line-height:1.4}"
        "table{border-collapse:collapse;font-size:13px;width:100%}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child{text-align:left}"
        "td{white-space:nowrap}th{background:#f3f3f3;font-weight:600}dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em;font-size:14px}"
        "h2{margin-top:1.4em;border-bottom:1px solid #ddd}.bad{color:#a00;font-weight:600}</style></head><body>\n<h1>Coding Spot: runs</h1>\n"
        "<p>One row per run in <code>reports/</code>. Rises are relative loss rises L_ablated / L_baseline − 1 "
        "at k (percent of scoped entries; the global configuration, or global granularity in earlier runs; zero "
        "ablation) in percent; <i>code</i> is the mean over code languages, <i>English</i> is literary English "
        "(Gutenberg prose); † a destroyed point (a loss at or above ln |V|). The last column is the damage-matched verdict "
        "on the spot's curve per configuration, against each general-text reference in turn (literary / modern "
        "English): <i>more</i> or <i>less</i> code damage than random damage that hurts general text equally (Holm "
        "p &lt; 0.05), <i>none</i> (no difference detected), <i>no point</i> (every point destroyed or beyond random "
        "damage's range); the README and each run's 04_ablation page give the numbers. Time is the sum of each "
        "stage's last sitting (a rerun that keeps finished work is quick); the commit is the code the run's last "
        "stage used, with its date, and beneath it the stages that ran at other code. – means not measured in that "
        "run.</p>\n"
        "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>\n" + "\n".join(body)
        + "\n</table>\n" + "\n".join(sections) + "\n"
        + "".join(f"<p>{html.escape(provenance(m))}</p>\n" for m in dict.fromkeys(table.get("model", [])) if m)
        + f"<p>{html.escape(CORPUS_NOTE)}</p>\n</body></html>\n")


def write_index(reports_dir: str | Path = REPORTS_DIR) -> Path:
    """Write reports/index.html atomically and return its path."""
    out = Path(reports_dir) / "index.html"
    write_text(out, index_html(collect(reports_dir)))
    return out
