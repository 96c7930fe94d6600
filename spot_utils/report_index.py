"""reports/index.html: every run in reports/ with its headline numbers and links to all its files; the README's
results block, rendered from the committed reports it names; and lookups of other runs for cross-model comparisons.

    python -m spot_utils.report_index [reports_dir] [--readme README.md]
"""
from __future__ import annotations

import argparse
import html
import warnings
import subprocess
from pathlib import Path

import pandas as pd

from . import structure
from .ablation_plan import OUTLIERS
from .io import read_json, write_text
from .masks import load_masks
from .models import CORPUS_NOTE, provenance
from .metrics import format_rise, is_missing, to_frame
from .paths import REPO_ROOT, REPORTS_DIR, RUNS_DIR
from .render import stage_problems
from .sources import CODE_LANGUAGES, PROSE_LANGUAGES as GENERAL_LANGUAGES
from .stage import STAGES
from .runs import mask_path

HEADLINE_KINDS = ("spot", "code_over_general", "random_uniform")
HEADLINE_METRICS = ("code_rise", "general_rise", "selectivity")
LOSS_SUBSETS = CODE_LANGUAGES + GENERAL_LANGUAGES  # held-out loss subsets (not the likelihood sets)


def run_headline(rows: list[dict], k_percent: float | None = None) -> dict:
    """Headline numbers of one run's metrics rows at k (default 1% if measured, else the largest k):
    mean baseline loss over the code and general loss subsets, and code_rise (subset 'code') / general_rise /
    selectivity of the spot, code_over_general and random_uniform (the global configuration, or global granularity
    in runs without configurations; against literary English, the first general-text reference; zero mode, mean
    over seeds)."""
    df = to_frame(rows)
    ks = sorted(float(k) for k in df.k_percent.dropna().unique())
    k = k_percent if k_percent is not None else (1.0 if 1.0 in ks else (ks[-1] if ks else None))
    out = {"k_percent": k, "model": next((m for m in df.model.dropna()), None)}
    base = df[(df.mask_kind == "baseline") & (df.metric == "loss") & df.subset.isin(LOSS_SUBSETS)]
    out["baseline_loss"] = float(base.value.mean()) if len(base) else None
    where = df.configuration if df.configuration.notna().any() else df.granularity
    first_reference = next(iter(df.reference.dropna()), None)
    at_k = df[(df.k_percent == k) & (where.isna() | (where == "global"))
              & (df.reference.isna() | (df.reference == first_reference))
              & (df["mode"].isna() | (df["mode"] == "zero"))
              & ~((df.metric == "code_rise") & (df.subset != "code"))]  # not the code:scored / code:unseen parts
    for kind in HEADLINE_KINDS:
        for metric in HEADLINE_METRICS:
            v = at_k[(at_k.mask_kind == kind) & (at_k.metric == metric)].value.dropna()
            out[f"{kind}.{metric}"] = float(v.mean()) if len(v) else None
        rises = at_k[(at_k.mask_kind == kind) & at_k.metric.isin(["code_rise", "general_rise"])]
        out[f"{kind}.destroyed"] = bool(rises.destroyed.fillna(False).astype(bool).any()) if len(rises) else None
    out["spot.verdicts"] = spot_verdicts(df)
    return out


def spot_verdicts(df: pd.DataFrame) -> dict[str, list[str]]:
    """{configuration: the damage-matched verdict on the spot against each general-text reference} (empty for runs
    without the damage-matched comparison)."""
    from .ablation_tables import verdict
    if not (df.metric == "matched_excess").any():
        return {}
    refs = list(dict.fromkeys(df.reference.dropna()))
    return {c: [verdict(df, c, r) for r in refs] for c in dict.fromkeys(df.configuration.dropna())}


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
    labelled 'run (model)'). A run after the first whose masks fail verification is left out with a warning.

    Summary: model, spot entries, share in norm/bias vectors, shared core and union of the per-language top-k,
    and the code / general loss rise at 1% of the spot and of random_uniform where the run's metrics.json has them.
    """
    rows, spots = [], {}
    for i, run in enumerate(run_names):
        try:
            spot, manifest = load_masks(mask_path(run, "spot", k_percent, root=runs_dir))
            totals = {region: load_masks(path)[1]["total"] if path.is_file() else None for region, path in
                      ((r, mask_path(run, r, k_percent, root=runs_dir)) for r in ("shared", "union"))}
        except ValueError as e:
            if i == 0:
                raise
            warnings.warn(f"run {run!r} left out of the comparison across models: its masks cannot be verified ({e})")
            continue
        row = dict(run=run, model=manifest.get("model"), **{f"spot_{k}": v for k, v in structure.summary(spot).items()},
                   **totals)
        row["shared_over_union"] = row["shared"] / row["union"] if row["shared"] is not None and row["union"] else None
        metrics_path = Path(reports_dir) / run / "metrics.json"
        h = run_headline(read_json(metrics_path), 1.0) if metrics_path.is_file() else {}
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
    parser.add_argument("--readme", metavar="PATH", help="also rewrite the results block of this README")
    args = parser.parse_args(argv)
    print("index written to", write_index(args.reports_dir))
    if args.readme:
        print("results block rewritten in", update_readme(args.readme, args.reports_dir))



# --- README results table (docs/METHOD.md, Damage-matched comparison) ------------------------------------------

README_KINDS = ("spot", "magnitude", "random", "random_uniform", "code_over_general", "code_minus_general")
README_BEGIN, README_END = "<!-- results:", "<!-- /results -->"  # the block names its runs: <!-- results: a b -->


def _configuration_column(df: pd.DataFrame) -> pd.Series:
    return df.configuration.fillna(df.granularity) if df.configuration.notna().any() else df.granularity


def _references(df: pd.DataFrame) -> list[str]:
    """The run's general-text references, in the order its rows give them (older runs: the general_rise subsets)."""
    refs = list(dict.fromkeys(df.reference.dropna()))
    return refs or list(dict.fromkeys(df[df.metric == "general_rise"].subset.dropna()))


def headline_points(df: pd.DataFrame, configuration: str) -> list[tuple[str, float]]:
    """Where the README reads a configuration: the smallest point of the spot's curve with no destroyed loss subset
    (its outlier masks, the top n entries, come before its k grid: ('top', n) or ('k', k)), and k = 1% where
    measured."""
    loss = df[(df.conf == configuration) & (df["mode"].fillna("zero") == "zero") & (df.metric == "loss")]

    def intact(kind, by):
        return sorted(v for v, g in loss[loss.mask_kind == kind].groupby(by)
                      if not g.destroyed.fillna(False).astype(bool).any())
    first = [("top", n) for n in intact(OUTLIERS, "n_entries")] + [("k", k) for k in intact("spot", "k_percent")]
    one = [("k", 1.0)] if 1.0 in set(loss[loss.mask_kind == "spot"].k_percent) else []
    return list(dict.fromkeys(first[:1] + one))


def _rise_cell(values: pd.Series, gone: pd.Series) -> str:
    if not len(values.dropna()):
        return "–"
    text = format_rise(values.mean())
    if len(values) > 1:
        text += f" ({format_rise(values.min())} … {format_rise(values.max())})"
    return text + (" †" if gone.fillna(False).astype(bool).any() else "")


def _excess_cell(df: pd.DataFrame, ref: str) -> str:
    me = df[(df.metric == "matched_excess") & (df.reference == ref) & df.seed.isna()]
    if not len(me):
        return "–"
    r = me.iloc[0]
    if pd.isna(r.value):
        return str(r.status).replace("_", " ")
    p = df[(df.metric == "p_holm_matched_excess") & (df.reference == ref) & df.seed.isna()].value
    mde = df[(df.metric == "mde_matched_excess") & (df.reference == ref) & df.seed.isna()].value
    return (f"{r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]" + (f"; p {p.iloc[0]:.2g}" if len(p) else "")
            + (f"; detectable ≥ {mde.iloc[0]:.2f}" if len(mde) else ""))


def results_table(runs: list[str], reports_dir: str | Path = REPORTS_DIR) -> str:
    """The README's results section, rendered from reports/<run>/metrics.json of each run: per model and
    configuration, at the smallest point of the spot's curve that is not destroyed (headline_points) and at 1%,
    every mask kind of README_KINDS with its code rise, general rise per reference (seeded controls: mean and range
    over seeds; † destroyed), and its matched excess against each reference with 95% interval and Holm p; then a
    verdict per model and configuration (ablation_tables.conclusion), computed from the numbers."""
    from .ablation_tables import conclusion, model_verdict, reference_label
    out = []
    for run in runs:
        df = to_frame(read_json(Path(reports_dir) / run / "metrics.json"))
        df = df.assign(conf=_configuration_column(df))
        refs = _references(df)
        model = next(iter(df.model.dropna()), run)
        out.append(f"**{model}** (`reports/{run}/`)\n")
        for configuration in [c for c in ("paper", "global", "per_tensor") if c in set(df.conf)]:
            zero = df[(df.conf == configuration) & (df["mode"].fillna("zero") == "zero")]
            head = ["k", "mask", "code rise"] + [f"{reference_label(r)} rise" for r in refs] + \
                [f"matched excess vs {reference_label(r)} [95% CI]; Holm p; smallest detectable" for r in refs]
            lines = [f"| k ({configuration}) | " + " | ".join(head[1:]) + " |", "|" + " --- |" * len(head)]
            for where, at_value in headline_points(df, configuration):
                for kind in ("spot",) if where == "top" else README_KINDS:  # no control is ablated at a top-n point
                    if where == "top":  # the spot's curve below its k grid: the top n entries alone
                        at = zero[(zero.mask_kind == OUTLIERS) & (zero.n_entries == at_value)]
                        point, label = f"top {at_value:g}", f"spot (top {at_value:g} entries)"
                    else:
                        at = zero[(zero.k_percent == at_value) & (zero.mask_kind == kind)]
                        point, label = f"{at_value:g}%", kind
                    if not len(at):
                        continue
                    code = at[(at.metric == "code_rise") & (at.subset == "code")]
                    cells = [point, label, _rise_cell(code.value, code.destroyed)]
                    for r in refs:
                        g = at[(at.metric == "general_rise") & ((at.reference == r) | (at.reference.isna() & (at.subset == r)))]
                        cells.append(_rise_cell(g.value, g.destroyed))
                    cells += [_excess_cell(at, r) for r in refs]
                    lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines) + "\n")
            if (df.metric == "matched_excess").any():
                out.append(conclusion(df, configuration, refs) + "\n")
        configurations = [c for c in ("paper", "global", "per_tensor") if c in set(df.conf)]
        if not (df.metric == "matched_excess").any():
            out.append(f"{model}: this run predates the damage-matched comparison and records no destroyed points "
                       "(its first k is its smallest, destroyed or not): no verdict.\n")
        else:
            out.append("**Verdict.** " + model_verdict(df, configurations, refs, model) + "\n")
    out.append("Rises: ablated / baseline loss − 1 on held-out windows (code: mean over the code languages), zero "
               "ablation; seeded controls: mean over seeds (range). † destroyed: a loss at or above ln |V|, left out "
               "of every comparison. Matched excess: ln(1 + code rise) above random_uniform's curve at the same "
               "general-text damage, with the smallest excess the run detects at α = 0.05 and power 0.8 "
               "(docs/METHOD.md, Damage-matched comparison).\n")
    return "\n".join(out)


def readme_block(readme: str) -> tuple[list[str], str]:
    """(the runs named by the README's results block, the block's current text)."""
    start = readme.index(README_BEGIN)
    head_end = readme.index("-->", start) + 3
    runs = readme[start + len(README_BEGIN): head_end - 3].split()
    return runs, readme[head_end: readme.index(README_END, head_end)].strip("\n")


def update_readme(path: str | Path, reports_dir: str | Path = REPORTS_DIR) -> Path:
    """Rewrite the README's results block from the reports it names (atomically)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    runs, old = readme_block(text)
    start = text.index(README_BEGIN)
    head_end = text.index("-->", start) + 3
    end = text.index(README_END, head_end)
    write_text(path, text[:head_end] + "\n" + results_table(runs, reports_dir) + "\n" + text[end:])
    return path


if __name__ == "__main__":
    main()
