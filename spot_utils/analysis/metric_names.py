"""The table of metric names in metrics.json (docs/METHOD.md, metrics.json rows): each name with its unit, its
direction, what produces it and which rows carry it. Producers and readers use the constants below, never a bare
string. A derived metric (a number per ablated point from its item losses) is one register_derived_metric call
plus its function: paired_tests.rise_rows then writes it per general-text reference beside code_rise and
general_rise, and every table that pivots by metric shows it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..base.registry import Registry

DIRECTIONS = ("higher_is_worse", "higher_is_better", "none")


@dataclass(frozen=True)
class MetricName:
    """A row of the metric-name table: unit; direction (DIRECTIONS: for a damage metric, higher is worse);
    produced_by: the function that writes its rows; carried_by: which rows hold it (mask kinds, subsets);
    derive: for a derived metric, derive(ablated, baseline, code_subsets, reference) -> float from {subset: item
    losses} of the ablated point and of the baseline (None: produced by its own function)."""
    unit: str
    direction: str
    produced_by: str
    carried_by: str
    derive: Callable | None = None


METRIC_NAMES = Registry("metric name")


def register_metric_name(name: str, *, unit: str, direction: str, produced_by: str, carried_by: str,
                         derive: Callable | None = None) -> MetricName:
    """Add a metric name (see MetricName); an unknown direction is refused."""
    if direction not in DIRECTIONS:
        raise ValueError(f"metric {name!r}: direction must be one of {DIRECTIONS}, got {direction!r}")
    entry = MetricName(unit, direction, produced_by, carried_by, derive)
    METRIC_NAMES.add(name, entry)
    return entry


def register_derived_metric(name: str, *, derive: Callable, unit: str, direction: str,
                            carried_by: str = "every ablated entry, per reference (subset 'code/<reference>')"
                            ) -> MetricName:
    """Add a derived metric: derive(ablated, baseline, code_subsets, reference) -> float, written by
    paired_tests.rise_rows (no value, status 'destroyed', where the point is destroyed)."""
    if not callable(derive):
        raise ValueError(f"derived metric {name!r} has no implementation: derive= must be callable")
    return register_metric_name(name, unit=unit, direction=direction, produced_by="paired_tests.rise_rows",
                                carried_by=carried_by, derive=derive)


def derived_metrics() -> dict[str, MetricName]:
    """{name: row} of the registered derived metrics, in registration order."""
    return {n: m for n, m in METRIC_NAMES.items() if m.derive is not None}


def p_name(metric: str) -> str:
    """The p-value metric of a test of `metric` (p_<metric>)."""
    return f"p_{metric}"


def holm_name(p_metric: str) -> str:
    """The Holm-adjusted name of a p-value metric: p_x -> p_holm_x."""
    return p_metric.replace("p_", "p_holm_", 1)


def mde_name(metric: str) -> str:
    """The smallest detectable effect of `metric` (mde_<metric>)."""
    return f"mde_{metric}"


LOSS, PERPLEXITY, ACCURACY, LOSS_RISE = "loss", "perplexity", "accuracy", "loss_rise"
UNIFORM_LOSS, N_SELECTED, VECTOR_SHARE = "uniform_loss", "n_selected", "vector_share"
CHANCE = "chance_level"
CODE_RISE, GENERAL_RISE, SELECTIVITY = "code_rise", "general_rise", "selectivity"
SELECTIVITY_MINUS_REFERENCE = "selectivity_minus_reference"
P_SELECTIVITY_VS_REFERENCE = "p_selectivity_vs_reference"
MATCHED_EXCESS = "matched_excess"
MATCHED_EXCESS_ANY_SUBSET = "matched_excess_any_subset"  # the same comparison under the old any-subset destroyed rule
LOSS_OVER_UNIFORM = "loss_over_uniform"
PLACEBO_MATCHED_EXCESS = "placebo_matched_excess"
PLACEBO_FALSE_POSITIVE_RATE = "placebo_false_positive_rate"
TUNING_CODE_GAIN, TUNING_GENERAL_FORGETTING = "tuning_code_gain", "tuning_general_forgetting"
TRAINABLE_COUNT, TUNING_GAIN_PER_PARAMETER = "trainable_count", "tuning_gain_per_parameter"
P_WILCOXON = "p_wilcoxon_"  # prefix: p_wilcoxon_<item metric>, per subset

_LOSS_ROWS = "every evaluated entry and the baseline, per subset"
_POINTS = "every ablated entry"
for _name, _unit, _direction, _by, _rows in (
        (LOSS, "nats per token", "higher_is_worse", "rows.loss_rows", _LOSS_ROWS),
        (ACCURACY, "fraction of tokens", "higher_is_better", "rows.loss_rows", _LOSS_ROWS),
        (PERPLEXITY, "exp(nats)", "higher_is_worse", "rows.loss_rows", _LOSS_ROWS),
        (LOSS_RISE, "ablated / baseline − 1", "higher_is_worse", "rows.loss_rows", "every ablated entry, per subset"),
        (UNIFORM_LOSS, "nats per token (ln |V|)", "none", "ablation_loop.ablate_and_evaluate",
         "the baseline, subset 'vocabulary'"),
        (CHANCE, "expected score of guessing", "none", "ablation_loop.ablate_and_evaluate",
         "the baseline, per subset of a metric group that defines it (multiple choice)"),
        (N_SELECTED, "entries", "none", "ablation_loop.mask_rows", _POINTS + ", subset 'parameters'"),
        (VECTOR_SHARE, "fraction of entries", "none", "ablation_loop.mask_rows", _POINTS + ", subset 'parameters'"),
        (LOSS_OVER_UNIFORM, "multiple of ln |V|", "higher_is_worse", "paired_tests.rise_rows",
         _POINTS + ", subset 'code' (the median over code subsets of their mean losses) and per reference"),
        (CODE_RISE, "ablated / baseline − 1", "higher_is_worse", "paired_tests.rise_rows",
         _POINTS + ", subset 'code' (and 'code:<part>')"),
        (GENERAL_RISE, "ablated / baseline − 1", "higher_is_worse", "paired_tests.rise_rows",
         _POINTS + ", per reference"),
        (SELECTIVITY, "code_rise / general_rise", "higher_is_worse", "paired_tests.rise_rows",
         _POINTS + ", per reference (subset 'code/<reference>')"),
        (SELECTIVITY_MINUS_REFERENCE, "difference of selectivities", "higher_is_worse", "paired_tests.paired_rows",
         "seed-pooled points other than random_uniform, per reference"),
        (P_SELECTIVITY_VS_REFERENCE, "p-value", "none", "paired_tests.paired_rows",
         "the rows of selectivity_minus_reference"),
        (mde_name(SELECTIVITY_MINUS_REFERENCE), "difference of selectivities", "none", "paired_tests.paired_rows",
         "the rows of selectivity_minus_reference"),
        (MATCHED_EXCESS, "ln(1 + code rise) above random_uniform's curve", "higher_is_worse",
         "paired_tests.matched_rows", "zero-mode points (seed-pooled and per seed), per configuration and reference"),
        (p_name(MATCHED_EXCESS), "p-value", "none", "paired_tests.matched_rows", "the pooled matched_excess rows"),
        (MATCHED_EXCESS_ANY_SUBSET, "ln(1 + code rise) above random_uniform's curve", "higher_is_worse",
         "paired_tests.matched_rows", "the pooled matched_excess points, under the any-subset destroyed rule "
         "(value, interval, status: for the sensitivity line)"),
        (p_name(MATCHED_EXCESS_ANY_SUBSET), "p-value", "none", "paired_tests.matched_rows",
         "the matched_excess_any_subset rows with a value"),
        (mde_name(MATCHED_EXCESS), "ln ratio", "none", "paired_tests.matched_rows", "the pooled matched_excess rows"),
        (PLACEBO_MATCHED_EXCESS, "ln(1 + code rise) above the other seeds' curve", "none",
         "paired_tests.placebo_rows", "random_uniform, per seed at a k of several seeds, configuration and reference"),
        (p_name(PLACEBO_MATCHED_EXCESS), "p-value", "none", "paired_tests.placebo_rows",
         "the placebo_matched_excess rows with a value"),
        (PLACEBO_FALSE_POSITIVE_RATE, "fraction of seeds called at α = 0.05", "higher_is_worse",
         "paired_tests.placebo_rows", "random_uniform, per configuration and reference (n = seeds compared)"),
        (TUNING_CODE_GAIN, "1 − tuned / untrained code loss", "higher_is_better", "tuning_rows.gain_rows",
         "every trained arm of stage 07, subset 'code' and 'code:<part>' (trained, held_out, unseen)"),
        (TUNING_GENERAL_FORGETTING, "tuned / untrained − 1", "higher_is_worse", "tuning_rows.gain_rows",
         "every trained arm of stage 07, per reference"),
        (TRAINABLE_COUNT, "entries", "none", "tuning_rows.gain_rows", "every trained arm of stage 07, subset 'parameters'"),
        (TUNING_GAIN_PER_PARAMETER, "tuning_code_gain / trainable_count", "higher_is_better", "tuning_rows.gain_rows",
         "every trained arm of stage 07, subset 'code'"),
):
    register_metric_name(_name, unit=_unit, direction=_direction, produced_by=_by, carried_by=_rows)
P_MATCHED_EXCESS, MDE_MATCHED_EXCESS = p_name(MATCHED_EXCESS), mde_name(MATCHED_EXCESS)
P_PLACEBO_MATCHED_EXCESS = p_name(PLACEBO_MATCHED_EXCESS)
P_HOLM_MATCHED_EXCESS = holm_name(P_MATCHED_EXCESS)
P_MATCHED_EXCESS_ANY_SUBSET = p_name(MATCHED_EXCESS_ANY_SUBSET)
P_HOLM_MATCHED_EXCESS_ANY_SUBSET = holm_name(P_MATCHED_EXCESS_ANY_SUBSET)
P_HOLM_SELECTIVITY_VS_REFERENCE = holm_name(P_SELECTIVITY_VS_REFERENCE)
MDE_SELECTIVITY_MINUS_REFERENCE = mde_name(SELECTIVITY_MINUS_REFERENCE)
