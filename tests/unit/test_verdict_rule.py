"""Verdicts under the destroyed rule on hand-made rows: the sensitivity line (the any-subset rows give the same verdict
or another, and why), collapse points reported with their numbers, and why a kind without a value has none."""
from spot_utils.analysis.rows import row
from spot_utils.report import tables

WHERE = dict(configuration="global", mode="zero", reference="english", subset="code/english", control_of="random_uniform")


def _excess(k, value, p, status=None, metric="matched_excess"):
    out = [row(metric=metric, mask_kind="spot", k_percent=k, value=value, ci_low=None if value is None else value - 0.05,
               ci_high=None if value is None else value + 0.05, status=status, **WHERE)]
    if value is not None:
        out.append(row(metric=metric.replace("matched_excess", "p_holm_matched_excess"), mask_kind="spot", k_percent=k,
                       value=p, **WHERE))
    return out


MEDIAN = _excess(0.1, 0.30, 0.001) + _excess(1.0, 0.02, 0.5)  # 'more', resting on k = 0.1%


def test_the_sensitivity_line_when_the_rules_disagree():
    # under the any rule k = 0.1% is left out (one code subset at ln |V|): the verdict would rest on k = 1% alone
    rows = MEDIAN + _excess(0.1, None, None, "code_collapse", "matched_excess_any_subset") \
        + _excess(1.0, 0.02, 0.5, metric="matched_excess_any_subset")
    assert tables.verdict(rows, "global", "english") == "more"
    assert tables.verdict(rows, "global", "english", rule="any") == "none"
    line = tables.sensitivity(rows, "global", "english")
    assert line.startswith("Under the any-subset rule the verdict would be 'none' instead, because k = 0.1% is "
                           "destroyed under it (code: a code subset at or above ln |V|)")
    said = tables.conclusion(rows, "global", ["english"])
    assert "hurts code more than random damage" in said and said.endswith(line)
    # the any rule destroys it outright (the reference): said so without the code note
    rows = MEDIAN + _excess(0.1, None, None, "destroyed", "matched_excess_any_subset") \
        + _excess(1.0, 0.02, 0.5, metric="matched_excess_any_subset")
    assert tables.sensitivity(rows, "global", "english").endswith("because k = 0.1% is destroyed under it.")
    # the same points, another excess: the line says the values differ
    rows = MEDIAN + _excess(0.1, 0.30, 0.2, metric="matched_excess_any_subset") \
        + _excess(1.0, 0.02, 0.5, metric="matched_excess_any_subset")
    assert "excesses differ under it" in tables.sensitivity(rows, "global", "english")


def test_the_sensitivity_line_when_the_rules_agree_and_without_any_subset_rows():
    rows = MEDIAN + _excess(0.1, 0.25, 0.004, metric="matched_excess_any_subset") \
        + _excess(1.0, None, None, "code_collapse", "matched_excess_any_subset")
    assert tables.sensitivity(rows, "global", "english") == "Under the any-subset rule the verdict is the same."
    assert tables.conclusion(rows, "global", ["english"]).endswith("Under the any-subset rule the verdict is the same.")
    assert tables.sensitivity(MEDIAN, "global", "english") is None  # a run written before the rows existed
    assert "any-subset" not in tables.conclusion(MEDIAN, "global", ["english"])


def _point(k, code_rise, general_rise, status, code_loss, general_loss):
    labels = dict(configuration="global", mode="zero", mask_kind="spot", k_percent=k)
    return [row(metric="code_rise", subset="code", value=code_rise, destroyed=status is not None, **labels),
            row(metric="general_rise", subset="english", reference="english", value=general_rise,
                destroyed=status == "destroyed", status=status, **labels),
            row(metric="loss_over_uniform", subset="code", value=code_loss, **labels),
            row(metric="loss_over_uniform", subset="english", reference="english", value=general_loss, status=status,
                **labels),
            row(metric="matched_excess", subset="code/english", reference="english", value=None,
                status=status, control_of="random_uniform", **labels)]


def test_a_collapse_is_reported_with_its_numbers_not_discarded():
    rows = _point(1.0, 9.0, 0.05, "code_collapse", 1.05, 0.70) + _point(5.0, 20.0, 3.0, "destroyed", 1.6, 1.1)
    assert tables.collapse_points(rows, "global", "english") == [
        "k = 1% (code +900%, literary English +5%; median code loss 1.05·ln |V|, literary English 0.70·ln |V|)"]
    said = tables.conclusion(rows, "global", ["english"])
    assert "no point comparable" in said
    assert "of its points, 1 is a collapse (code collapses, general text intact), 1 is destroyed" in said \
        or "of its points, 1 is destroyed, 1 is a collapse (code collapses, general text intact)" in said
    assert "Against literary English, code collapses, general text intact at k = 1% (code +900%" in said
    hits = tables.code_only_collapses(rows, "english")
    assert list(hits.k_percent) == [1.0] and hits.code_loss.iloc[0] == 1.05 and hits.general_rise.iloc[0] == 0.05
    frame = tables.damage_frame(rows, "global", "english").set_index("point")
    assert frame.loc["k = 1%", "collapse"] and not frame.loc["k = 1%", "destroyed"]
    assert frame.loc["k = 5%", "destroyed"] and not frame.loc["k = 5%", "collapse"]
    assert not frame.kept.any()
    only = _point(1.0, 9.0, 0.05, "code_collapse", 1.05, 0.70)
    assert "at its only point code collapses, general text intact" in tables.conclusion(only, "global", ["english"])
