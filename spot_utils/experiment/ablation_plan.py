"""What stage 04 ablates and measures, read from the mask-kind table (method/mask_kinds.py): per configuration, the
spot at every k, the stage-03 kinds ablated at their own k (authors_spot), its controls, the kinds built from the
spot (its norm and bias entries alone), the extra ablation modes, the kinds read from stage 03 (the contrastive
regions) and the outlier masks;
random_uniform at the k values beyond the grid that the damage-matched comparison needs; the metric groups each
mask gets; and the check that every control has its spot's count (docs/METHOD.md, Ablation).

Where the headline reads a mask (the headline k values: k_detail and the smallest k at which a configuration's spot
is not destroyed), every seeded control runs with its seeds; elsewhere random_uniform runs with its first seed.
"""
from __future__ import annotations

import math

from ..base.run_files import Lazy, mask_path
from ..measure.metric_groups import METRIC_GROUPS
from ..method.ablation import random_uniform_of
from ..method.mask_kinds import MASK_KINDS, OUTLIERS, REFERENCE_CONTROL, controls, is_control, kinds
from ..method.masks import MaskFile, counts_per_tensor, mask_count
from ..method.scoring import scoped_parameters
from ..method.selection import (CONFIGURATIONS, configuration_count, configuration_scope, configuration_top_count,
                                top_count_global)


def run_labels(params: dict, **labels) -> dict:
    """Labels every row of the run carries (model, criterion, aggregation), then `labels`."""
    return dict(model=params["model"], criterion=params["criterion"], aggregation=params["aggregation"], **labels)


def configuration_labels(params: dict, configuration: str, **labels) -> dict:
    """run_labels plus the configuration and the granularity its spot is selected with."""
    return run_labels(params, configuration=configuration,
                      granularity=CONFIGURATIONS[configuration].granularity, **labels)


def _seeds(control, params: dict, headline: bool) -> list:
    """A control's seeds: None for an unseeded one; random_uniform ('uniform') the first n_uniform_seeds of
    random_seeds at a headline k and the first seed elsewhere; the others ('all') every random seed."""
    if control.seeds is None:
        return [None]
    seeds = params["random_seeds"]
    if control.seeds == "uniform":
        return seeds[: params["n_uniform_seeds"]] if headline else seeds[:1]
    return list(seeds)


def scope_shapes(model, configuration: str) -> dict[str, tuple]:
    """Shapes of the scoped tensors a configuration selects from (random_uniform spreads its entries over them)."""
    return configuration_scope({n: tuple(p.shape) for n, p in scoped_parameters(model).items()}, configuration)


def spot_ks(params: dict, model, configuration: str) -> list[float]:
    """The k of the grid at which a configuration's spot holds any entry (per tensor, a k below 100 / n_t of every
    tensor selects none: stage 03 writes no spot there)."""
    shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
    return [k for k in params["k_grid"] if configuration_count(shapes, k, configuration) > 0]


def spot_masks(params: dict, model, configuration: str):
    """{k: spot} of a configuration at every k of spot_ks, read from stage 03's masks when accessed (runs.Lazy:
    one spot in memory at a time)."""
    return Lazy({k: mask_path(params, "spot", k, configuration) for k in spot_ks(params, model, configuration)},
                MaskFile)  # each read one tensor at a time when ablated


def control_entries(params: dict, model, configuration: str, spots, headline_ks):
    """(labels, masks) of everything compared with the spots of one configuration ({k: spot}, e.g. spot_masks), from
    the mask-kind table: at every k random_uniform (first seed: its curve); at the headline k values (every k with
    `every_k`) the other seeds of random_uniform, the other controls with their seeds and the kinds built from the
    spot (spot_norms, where the spot holds 1-D entries); at k_detail the spot under each extra ablation mode; at the
    headline k values the kinds read from stage 03 (the contrastive regions). Masks are built on iteration."""
    shapes = scope_shapes(model, configuration)
    headline_ks = set(headline_ks)
    for k, spot in spots.items():
        headline = k in headline_ks or params["every_k"]
        label = configuration_labels(params, configuration, k_percent=k)
        for name, control in controls().items():
            if control.every_k or headline:
                for seed in _seeds(control, params, headline):
                    seeded = {} if seed is None else dict(seed=seed)
                    yield dict(label, mask_kind=name, **seeded, control_of="spot"), \
                        control.build(spot, seed=seed, model=model, shapes=shapes)
        if headline:
            for name in kinds(ablation="from_spot"):
                part = MASK_KINDS[name].build(spot, params, k, configuration)
                if mask_count(part):
                    yield dict(label, mask_kind=name, control_of="spot"), part
        if k == params["k_detail"] or params["every_k"]:
            for mode in params["ablation_modes"][1:]:
                yield dict(label, mask_kind="spot", mode=mode, seed=params["seed"]), spot
        if headline:
            for name in kinds(ablation="stage03", k_param=None):
                yield dict(label, mask_kind=name), MASK_KINDS[name].build(spot, params, k, configuration)


def own_k_entries(params: dict, model, configuration: str):
    """(labels, masks) of the stage-03 kinds ablated at their own k values (a row's k_param, e.g. authors_spot at
    authors_spot_k) in the configuration that builds them, read from stage 03's files when ablated; a k at which
    the configuration selects nothing is skipped (stage 03 writes no mask there), and so is an empty mask."""
    shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
    for name in kinds(ablation="stage03"):
        row = MASK_KINDS[name]
        if row.k_param is None or not row.built_in(configuration):
            continue
        for k in params[row.k_param]:
            if configuration_count(shapes, k, configuration) == 0:
                continue
            masks = row.build(None, params, k, configuration)
            if mask_count(masks):  # an empty mask ablates nothing (authors_spot where |A| ranks like |θ|)
                yield configuration_labels(params, configuration, k_percent=k, mask_kind=name), masks


def uniform_entry(params: dict, model, configuration: str, k_percent: float, seed: int) -> tuple[dict, dict]:
    """random_uniform at a k where the spot is not ablated (the extension of its k grid): as many entries as the
    configuration's spot would hold at k, uniform over the configuration's scope."""
    shapes = scope_shapes(model, configuration)
    count = configuration_count(shapes, k_percent, configuration)
    return (configuration_labels(params, configuration, k_percent=k_percent, mask_kind=REFERENCE_CONTROL, seed=seed,
                                 control_of="spot"), random_uniform_of(count, seed, shapes))


def next_extension_k(params: dict, intact_ks, destroyed_ks) -> float | None:
    """The next k random_uniform is extended to: the smallest k of random_extension_k above every k at which it was
    measured intact and below every k at which it was destroyed (only such a k can extend its curve's reach: above
    the grid, or between grid values on a model it destroys within the grid), or None."""
    low, high = max(intact_ks, default=0.0), min(destroyed_ks, default=math.inf)
    return next((k for k in sorted(params["random_extension_k"]) if low < k < high), None)


def mask_plan(params: dict, model, headline_ks: dict | None = None):
    """(labels, masks) of every configuration's spots and control_entries, one at a time, with the headline k
    values given per configuration (default: k_detail). The damage-matched extension of random_uniform and the
    outlier masks come on top (uniform_entry, outlier_masks); stage 04 chooses the headline k values as it goes
    (ablation_loop.sweep)."""
    for configuration in params["configurations"]:
        spots = spot_masks(params, model, configuration)
        for k, spot in spots.items():
            yield configuration_labels(params, configuration, k_percent=k, mask_kind="spot"), spot
        yield from own_k_entries(params, model, configuration)
        ks = (headline_ks or {}).get(configuration, [params["k_detail"]])
        yield from control_entries(params, model, configuration, spots, ks)


def plan_metrics(labels: dict, params: dict) -> tuple[str, ...]:
    """Metric groups an entry gets, in table order: the cheap ones always; the heavy ones for the heavy mask kinds
    (mask_kinds.kinds(heavy=True)) at k_detail (every k with `every_k`), zero mode only, a seeded control with one
    of its first heavy_seeds seeds only (null: every seed), and for the baseline."""
    seed, n_heavy = labels.get("seed"), params["heavy_seeds"]
    heavy = labels["mask_kind"] in kinds(heavy=True) and labels.get("mode", "zero") in (None, "zero") \
        and (labels["mask_kind"] == "baseline" or labels["k_percent"] == params["k_detail"] or params["every_k"]) \
        and (seed is None or n_heavy is None or seed in params["random_seeds"][:n_heavy])
    return tuple(name for name, group in METRIC_GROUPS.items() if group.cost == "cheap" or heavy)


def outlier_masks(aggregate: dict, counts, configuration: str | None = None) -> list[tuple[dict, dict]]:
    """(labels, masks) of the top n entries of the aggregate for each n in counts (global order, exact ties), over
    a configuration's scope (every scoped tensor when None)."""
    out = []
    for n in counts:
        masks = top_count_global(aggregate, int(n)) if configuration is None else \
            configuration_top_count(aggregate, int(n), configuration)
        labels = dict(mask_kind=OUTLIERS, n_entries=int(n))
        if configuration is not None:
            labels.update(configuration=configuration, granularity=CONFIGURATIONS[configuration].granularity)
        out.append((labels, masks))
    return out


def controls_match(plan) -> bool:
    """True when every control has its spot's count where its mask-kind row says it is matched (per tensor or in
    total). One pass over the plan (a spot comes before its controls): only the spots' counts are kept."""
    spots = {}
    for lab, m in plan:
        key = (lab.get("configuration"), lab["k_percent"])
        if lab["mask_kind"] == "spot" and lab.get("mode", "zero") in (None, "zero"):
            spots[key] = counts_per_tensor(m)
            continue
        kind = lab["mask_kind"]
        if lab.get("control_of") != "spot" or not is_control(kind) or key not in spots:
            continue
        matched_on, spot = MASK_KINDS[kind].matched_on, spots[key]
        if matched_on == "per_tensor" and {n: c for n, c in counts_per_tensor(m).items() if c} != \
                {n: c for n, c in spot.items() if c}:
            return False
        if matched_on == "total" and mask_count(m) != sum(spot.values()):
            return False
    return True
