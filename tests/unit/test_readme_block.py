"""The README block's rows: every point a verdict rests on and the paper's k values (table_points), and the table
of executed and general tasks (task_table), on hand-made rows."""
import pandas as pd

from spot_utils.analysis.rows import row, to_frame
from spot_utils.report.readme_block import PAPER_KS, table_points, task_table

LAB = dict(model="m", configuration="paper", granularity="per_tensor", mode="zero")


def rise(kind, k, value=0.1, n=None, status=None, **extra):
    return [row(metric="code_rise", subset="code", mask_kind=kind, k_percent=k, n_entries=n, value=value,
                destroyed=status == "destroyed", **LAB, **extra),
            row(metric="general_rise", subset="english", reference="english", mask_kind=kind, k_percent=k,
                n_entries=n, value=value / 2, status=status, destroyed=status == "destroyed", **LAB, **extra)]


def excess(kind, k, value, p, n=None):
    return [row(metric="matched_excess", subset="code/english", reference="english", mask_kind=kind, k_percent=k,
                n_entries=n, value=value, ci_low=value - 0.1, ci_high=value + 0.1, **LAB),
            row(metric="p_holm_matched_excess", subset="code/english", reference="english", mask_kind=kind,
                k_percent=k, n_entries=n, value=p, **LAB)]


def frame(rows):
    df = to_frame(rows)
    return df.assign(conf=df.configuration)


def test_table_points_hold_the_verdict_points_and_the_papers_k():
    rows = (rise("top_entries", None, n=10) + excess("top_entries", None, 0.05, 0.3, n=10)
            + rise("spot", 0.01) + excess("spot", 0.01, 0.3, 0.01)  # significant: a verdict rests on it
            + rise("spot", 0.1) + excess("spot", 0.1, 0.01, 0.9)  # kept, not significant, not a paper k
            + rise("spot", 1.0, status="destroyed") + rise("spot", 5.0, status="destroyed")
            + rise("authors_spot", 0.5) + rise("random_uniform", 1.0, seed=0))
    assert PAPER_KS == (0.5, 1.0, 3.0, 5.0)
    # the top 10 entries are the first kept point; 3% was not measured; k = 0.1% is neither
    assert table_points(frame(rows), "paper") == [("top", 10), ("k", 0.01), ("k", 0.5), ("k", 1.0), ("k", 5.0)]


def test_task_table_reads_pass_at_1_seeds_mcnemar_and_multiple_choice():
    base = dict(LAB, configuration=None, granularity=None)
    rows = [row(metric="pass@1", subset="humaneval", mask_kind="baseline", value=0.6, ci_low=0.5, ci_high=0.7, **base),
            row(metric="acc_norm", subset="arc_easy", mask_kind="baseline", value=0.6, **base),
            row(metric="acc_norm", subset="piqa", mask_kind="baseline", value=0.7, **base),
            row(metric="chance_level", subset="arc_easy", mask_kind="baseline", value=0.25, **base),
            row(metric="chance_level", subset="piqa", mask_kind="baseline", value=0.5, **base),
            row(metric="pass@1", subset="humaneval", mask_kind="spot", k_percent=1.0, value=0.1, ci_low=0.05,
                ci_high=0.15, **LAB),
            row(metric="p_holm_mcnemar_pass@1", subset="humaneval", mask_kind="spot", k_percent=1.0, value=0.001,
                **LAB),
            row(metric="pass@1", subset="humaneval", mask_kind="authors_spot", k_percent=1.0, value=None,
                status="not generated: destroyed", **LAB)]
    rows += [row(metric="pass@1", subset="humaneval", mask_kind="random_uniform", k_percent=1.0, seed=s, value=v,
                 ci_low=v - 0.1, ci_high=v + 0.1, **LAB) for s, v in ((0, 0.55), (1, 0.5))]
    lines = task_table(frame(rows)).splitlines()
    assert lines[0] == "| mask | humaneval pass@1 | McNemar p vs baseline (humaneval) | general tasks acc_norm (mean of 2) |"
    assert "| baseline | 0.60 [0.50, 0.70] | – | 0.650 (chance 0.375) |" in lines
    assert "| spot (paper, 1%) | 0.10 [0.05, 0.15] | 0.001 | – |" in lines
    assert "| authors_spot (paper, 1%) | not generated: destroyed | – | – |" in lines
    assert "| random_uniform (paper, 1%) | 0.53 (0.50 … 0.55; 2 seeds) | – | – |" in lines
    assert not any(line.startswith("| code_over_general") for line in lines)  # not measured: no row
    assert task_table(frame(rows[1:5])).splitlines()[0] == "| mask | general tasks acc_norm (mean of 2) |"
    assert task_table(frame(rise("spot", 1.0))) == ""
