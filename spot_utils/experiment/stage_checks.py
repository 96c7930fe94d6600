"""The checks a stage notebook runs before its results: one table of (check, passed) rows that stops the stage on a
failure, and the checks of stage 04 that rebuild its plan."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..base.run_files import mask_path
from ..method.mask_kinds import REFERENCE_CONTROL, controls
from ..method.masks import MaskFile
from .ablation_plan import controls_match, mask_plan


def checks_table(checks) -> pd.DataFrame:
    """A stage's checks table, after asserting that every check passed.

    Args:
        checks: (what is checked, passed) pairs; `passed` is a bool (numpy's included).

    Returns:
        A frame with the columns check and passed, one row per check.

    Raises:
        TypeError: a result is not a bool (a Series or a count would hide what failed), naming the check.
        AssertionError: a check failed; the message names every failed check.
    """
    checks = list(checks)
    for name, passed in checks:
        if not isinstance(passed, (bool, np.bool_)):
            raise TypeError(f"check {name!r} gave {type(passed).__name__} {passed!r}, not a bool")
    table = pd.DataFrame([(name, bool(passed)) for name, passed in checks], columns=["check", "passed"])
    failed = table.check[~table.passed].tolist()
    if failed:
        raise AssertionError(f"{len(failed)} of {len(table)} checks failed: {'; '.join(failed)}\n{table}")
    return table


def authors_spot_outside_spot(params: dict, ks) -> bool:
    """Whether authors_spot at each k shares no entry with the paper spot at that k where stage 03 wrote both: the
    paper spot is the per-tensor top-k of A, which authors_spot removes (both read one tensor at a time)."""
    for k in ks:
        spot_file = mask_path(params, "spot", k, "paper")
        if not spot_file.is_file():
            continue
        authors, spot = MaskFile(mask_path(params, "authors_spot", k, "paper")), MaskFile(spot_file)
        if any(bool((authors[n] & spot[n]).any()) for n in authors):
            return False
    return True


def controls_match_at_headline_ks(params: dict, model, sweep: dict) -> bool:
    """Whether every control of stage 04's plan, rebuilt at the headline k values the sweep chose per configuration
    (`sweep[configuration]["headline_ks"]`), has its spot's count where its control table entry says it is matched."""
    return controls_match(mask_plan(params, model, {c: s["headline_ks"] for c, s in sweep.items()}))


def matched_rows_complete(rows: pd.DataFrame, configurations, references) -> bool:
    """Whether the spot and every control other than the reference one have a matched_excess row in every
    configuration against every general-text reference."""
    compared = {"spot", *controls()} - {REFERENCE_CONTROL}
    matched = rows[rows.metric == "matched_excess"]
    return all(compared <= set(matched[(matched.configuration == c) & (matched.reference == r)].mask_kind)
               for c in configurations for r in references)
