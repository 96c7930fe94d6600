"""The README's results block (docs/METHOD.md, Damage-matched comparison), rendered from the committed reports it
names: per model and configuration, the mask kinds at the points the verdicts read, and the verdicts."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..analysis.metric_names import (CHANCE, CODE_RISE, GENERAL_RISE, LOSS, MATCHED_EXCESS, MDE_MATCHED_EXCESS,
                                     P_HOLM_MATCHED_EXCESS)
from ..analysis.rows import format_rise, to_frame
from ..measure.metric_groups import METRIC_GROUPS
from ..base.io import read_json, write_text
from ..base.paths import REPORTS_DIR
from ..method.mask_kinds import OUTLIERS, readme_kinds
from ..experiment.params import DEFAULTS
from .tables import ALPHA, conclusion, model_summary, reference_label, status_words

README_KINDS = readme_kinds()  # the mask-kind table's README rows, in their order
PAPER_KS = tuple(DEFAULTS["authors_spot_k"])  # the k values the authors' damage script zeroes
README_BEGIN, README_END = "<!-- results:", "<!-- /results -->"  # the block names its runs: <!-- results: a b -->


def _configuration_column(df: pd.DataFrame) -> pd.Series:
    return df.configuration.fillna(df.granularity) if df.configuration.notna().any() else df.granularity


def _references(df: pd.DataFrame) -> list[str]:
    """The run's general-text references, in the order its rows give them (older runs: the general_rise subsets)."""
    refs = list(dict.fromkeys(df.reference.dropna()))
    return refs or list(dict.fromkeys(df[df.metric == GENERAL_RISE].subset.dropna()))


def headline_points(df: pd.DataFrame, configuration: str) -> list[tuple[str, float]]:
    """Where the README reads a configuration: the smallest point of the spot's curve that the destroyed rule keeps
    (no code_rise or general_rise row destroyed or collapsed, any seed; runs without those rows: no destroyed loss
    subset) (its outlier masks, the top n entries, come before its k grid: ('top', n) or ('k', k)), and k = 1%
    where measured."""
    zero = df[(df.conf == configuration) & (df["mode"].fillna("zero") == "zero")]
    rises = zero[zero.metric.isin([CODE_RISE, GENERAL_RISE]) & ~zero.subset.fillna("").str.startswith("code:")]
    read = rises if len(rises) else zero[zero.metric == LOSS]
    loss = zero[zero.metric == LOSS]

    def intact(kind, by):
        return sorted(v for v, g in read[read.mask_kind == kind].groupby(by)
                      if not g.destroyed.fillna(False).astype(bool).any() and not g.status.notna().any())
    first = [("top", n) for n in intact(OUTLIERS, "n_entries")] + [("k", k) for k in intact("spot", "k_percent")]
    one = [("k", 1.0)] if 1.0 in set(loss[loss.mask_kind == "spot"].k_percent) else []
    return list(dict.fromkeys(first[:1] + one))


def table_points(df: pd.DataFrame, configuration: str, alpha: float = ALPHA) -> list[tuple[str, float]]:
    """Every point the README's table shows for a configuration, top-n points first, then by k: the headline points,
    the paper's k values (PAPER_KS) where a README kind was measured, and every point a verdict rests on (a
    seed-pooled matched excess of a README kind with Holm p < alpha)."""
    zero = df[(df.conf == configuration) & (df["mode"].fillna("zero") == "zero")]
    measured = set(zero[zero.mask_kind.isin(README_KINDS) & (zero.metric == CODE_RISE)].k_percent.dropna())
    points = set(headline_points(df, configuration)) | {("k", k) for k in PAPER_KS if k in measured}
    me = zero[(zero.metric == MATCHED_EXCESS) & zero.seed.isna() & zero.value.notna()
              & zero.mask_kind.isin([*README_KINDS, OUTLIERS])]
    p = zero[(zero.metric == P_HOLM_MATCHED_EXCESS) & zero.seed.isna()]
    def same(column, value):
        return column.fillna(-1) == (-1 if pd.isna(value) else value)
    for r in me.itertuples():
        hit = p[(p.mask_kind == r.mask_kind) & (p.reference == r.reference) & same(p.k_percent, r.k_percent)
                & same(p.n_entries, r.n_entries)].value
        if len(hit) and hit.iloc[0] < alpha:
            points.add(("top", r.n_entries) if r.mask_kind == OUTLIERS else ("k", r.k_percent))
    return sorted(points, key=lambda pt: (pt[0] != "top", pt[1]))


def _rise_cell(values: pd.Series, gone: pd.Series) -> str:
    if not len(values.dropna()):
        return "–"
    text = format_rise(values.mean())
    if len(values) > 1:
        text += f" ({format_rise(values.min())} … {format_rise(values.max())})"
    return text + (" †" if gone.fillna(False).astype(bool).any() else "")


def _excess_cell(df: pd.DataFrame, ref: str) -> str:
    me = df[(df.metric == MATCHED_EXCESS) & (df.reference == ref) & df.seed.isna()]
    if not len(me):
        return "–"
    r = me.iloc[0]
    if pd.isna(r.value):
        return status_words(r.status)
    p = df[(df.metric == P_HOLM_MATCHED_EXCESS) & (df.reference == ref) & df.seed.isna()].value
    mde = df[(df.metric == MDE_MATCHED_EXCESS) & (df.reference == ref) & df.seed.isna()].value
    return (f"{r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]" + (f"; p {p.iloc[0]:.2g}" if len(p) else "")
            + (f"; detectable ≥ {mde.iloc[0]:.2f}" if len(mde) else ""))


def _score_cell(rows: pd.DataFrame) -> str:
    """'0.61 [0.53, 0.68]' of a mean score (seeds: their mean, range in parentheses); its status where not measured."""
    values = rows.value.dropna()
    if not len(values):
        return status_words(rows.status.dropna().iloc[0]) if rows.status.notna().any() else "–"
    if len(values) > 1:
        return f"{values.mean():.2f} ({values.min():.2f} … {values.max():.2f}; {len(values)} seeds)"
    r = rows[rows.value.notna()].iloc[0]
    return f"{r.value:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" if pd.notna(r.ci_low) else f"{r.value:.2f}"


def task_table(df: pd.DataFrame, k: float = 1.0) -> str:
    """The executed and general tasks of a run, where it measured them ('' otherwise): per configuration, the
    baseline and every README kind at k, with HumanEval and MBPP pass@1 (greedy, executed; 95% interval; seeded
    controls: mean over seeds), the exact McNemar p against the baseline (Holm), and the mean multiple-choice
    acc_norm over the general benchmarks (the baseline's with the mean chance level)."""
    passed, mc = METRIC_GROUPS["generation"].item_metrics[0], "acc_norm"
    gen_subsets = [s for s in ("humaneval", "mbpp") if ((df.metric == passed) & (df.subset == s)).any()]
    benchmarks = sorted(set(df[df.metric == mc].subset.dropna()))
    if not gen_subsets and not benchmarks:
        return ""
    zero = df[df["mode"].fillna("zero") == "zero"]
    chance = df[(df.metric == CHANCE) & df.subset.isin(benchmarks)].groupby("subset").value.first()
    head = ["mask", *[f"{s} pass@1" for s in gen_subsets], *[f"McNemar p vs baseline ({s})" for s in gen_subsets]]
    if benchmarks:
        head.append(f"general tasks acc_norm (mean of {len(benchmarks)})")
    lines = [f"| {' | '.join(head)} |", "|" + " --- |" * len(head)]

    def line(label, at):
        cells = [label] + [_score_cell(at[(at.metric == passed) & (at.subset == s)]) for s in gen_subsets]
        for s in gen_subsets:
            p = at[(at.metric == f"p_holm_mcnemar_{passed}") & (at.subset == s)].value
            cells.append(f"{p.max():.2g}" if len(p) else "–")
        if benchmarks:
            acc = at[(at.metric == mc) & at.subset.isin(benchmarks)]
            cells.append(f"{acc.groupby('subset').value.mean().mean():.3f}" if len(acc) else "–")
            if label == "baseline" and len(chance):
                cells[-1] += f" (chance {chance.mean():.3f})"
        if any(c != "–" for c in cells[1:]):
            lines.append("| " + " | ".join(cells) + " |")
    line("baseline", zero[zero.mask_kind == "baseline"])
    for configuration in [c for c in ("paper", "global") if c in set(zero.conf)]:
        for kind in README_KINDS:
            line(f"{kind} ({configuration}, {k:g}%)",
                 zero[(zero.conf == configuration) & (zero.mask_kind == kind) & (zero.k_percent == k)])
    return "\n".join(lines) + "\n"


def results_table(runs: list[str], reports_dir: str | Path = REPORTS_DIR) -> str:
    """The README's results section, rendered from reports/<run>/metrics.json of each run: per model and
    configuration, at the smallest point of the spot's curve that is not destroyed (headline_points) and at 1%,
    every mask kind of README_KINDS with its code rise, general rise per reference (seeded controls: mean and range
    over seeds; † destroyed: code under the median rule, or the reference), and its matched excess against each reference with 95% interval and Holm p; then a
    verdict per configuration (tables.conclusion) and per model (tables.model_summary, the index's sentence),
    computed from the numbers, and for a run whose rows predate the median destroyed rule (schema version < 3) a
    line that says so."""
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
            for where, at_value in table_points(df, configuration):
                for kind in ("spot",) if where == "top" else README_KINDS:  # no control is ablated at a top-n point
                    if where == "top":  # the spot's curve below its k grid: the top n entries alone
                        at = zero[(zero.mask_kind == OUTLIERS) & (zero.n_entries == at_value)]
                        point, label = f"top {at_value:g}", f"spot (top {at_value:g} entries)"
                    else:
                        at = zero[(zero.k_percent == at_value) & (zero.mask_kind == kind)]
                        point, label = f"{at_value:g}%", kind
                    if not len(at):
                        continue
                    code = at[(at.metric == CODE_RISE) & (at.subset == "code")]
                    cells = [point, label, _rise_cell(code.value, code.destroyed)]
                    for r in refs:
                        g = at[(at.metric == GENERAL_RISE) & ((at.reference == r) | (at.reference.isna() & (at.subset == r)))]
                        cells.append(_rise_cell(g.value, g.destroyed))
                    cells += [_excess_cell(at, r) for r in refs]
                    lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines) + "\n")
            if (df.metric == MATCHED_EXCESS).any():
                out.append(conclusion(df, configuration, refs) + "\n")
                if "authors_spot" in set(zero.mask_kind):
                    out.append(conclusion(df, configuration, refs, kind="authors_spot") + "\n")
        tasks = task_table(df)
        if tasks:
            out.append(f"Executed coding benchmarks and general tasks ({model}):\n\n" + tasks)
        configurations = [c for c in ("paper", "global", "per_tensor") if c in set(df.conf)]
        if not (df.metric == MATCHED_EXCESS).any():
            out.append(f"{model}: this run predates the damage-matched comparison and records no destroyed points "
                       "(its first k is its smallest, destroyed or not): no verdict.\n")
        else:
            out.append("**Verdict.** " + model_summary(df, configurations, refs, model) + "\n")
        version = int(df.schema_version.fillna(1).max())
        if version < 3:  # written under the any-subset rule
            out.append(f"{model}: these rows predate the median destroyed rule (metrics schema {version}): † marks a "
                       "point at which any code subset or the reference reached ln |V|, code collapses are not told "
                       "apart from destroyed points and no verdict has its sensitivity line; rerunning stage 04 "
                       "applies the rule.\n")
    out.append("Rises: ablated / baseline loss − 1 on held-out windows (code: mean over the code languages, each "
               "capped at ln |V| where code is kept), zero ablation; seeded controls: mean over seeds (range). † "
               "destroyed: a mean loss at or above ln |V|, what a uniform guess over the vocabulary costs (code: the "
               "median over the code languages). Where the reference is destroyed the point is left out of every "
               "comparison; where code is and the reference is not, code collapses with general text intact: no "
               "matched excess, the rises shown. Matched excess: ln(1 + code rise) above random_uniform's curve at the same "
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
