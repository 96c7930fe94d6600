"""What stage 04 ablates and measures: the mask plan (the spot, its controls from the control table, the extra
ablation modes, the contrastive regions), the metric groups each mask gets, the outlier masks, and the check that
every control has its spot's count (docs/METHOD.md, Ablation).
"""
from __future__ import annotations

from .ablation import CONTROLS, REFERENCE_CONTROL
from .masks import counts_per_tensor, mask_count
from .metric_groups import METRIC_GROUPS

HEAVY_KINDS = ("baseline", "spot", "code_over_general", REFERENCE_CONTROL)  # get the heavy metric groups


def run_labels(params: dict, **labels) -> dict:
    """Labels every row of the run carries (model, criterion, aggregation), then `labels`."""
    return dict(model=params["model"], criterion=params["criterion"], aggregation=params["aggregation"], **labels)


def _seeds(control, params: dict) -> list:
    if control.seeds is None:
        return [None]
    seeds = params["random_seeds"]
    return seeds[: params.get("n_uniform_seeds", 1)] if control.seeds == "uniform" else list(seeds)


def mask_plan(params: dict, model):
    """(labels, masks) for every ablation of the run, one at a time.

    At each k and granularity: the spot, then every control of the table (ablation.CONTROLS) that runs at every k,
    and at k_detail (every k with `every_k`) the others and the spot under each extra ablation mode. At each k
    (global): code_over_general; code_minus_general at k_detail (or every k).
    """
    from .masks import load_masks
    from .runs import mask_path
    from .scoring import scoped_parameters

    shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
    base = run_labels(params)
    for k in params["k_grid"]:
        detail = k == params["k_detail"] or params.get("every_k", False)
        for gran in params["granularities"]:
            spot, _ = load_masks(mask_path(params, "spot", k, gran))
            label = dict(base, k_percent=k, granularity=gran)
            yield dict(label, mask_kind="spot"), spot
            for name, control in CONTROLS.items():
                if control.every_k or detail:
                    for seed in _seeds(control, params):
                        seeded = {} if seed is None else dict(seed=seed)
                        yield dict(label, mask_kind=name, **seeded, control_of="spot"), \
                            control.build(spot, seed=seed, model=model, shapes=shapes)
            if detail:
                for mode in params.get("ablation_modes", ["zero"])[1:]:
                    yield dict(label, mask_kind="spot", mode=mode, seed=params["seed"]), spot
        label = dict(base, k_percent=k, granularity="global")
        yield dict(label, mask_kind="code_over_general"), load_masks(mask_path(params, "code_over_general", k))[0]
        if detail:
            yield dict(label, mask_kind="code_minus_general"), load_masks(mask_path(params, "code_minus_general", k))[0]


def plan_metrics(labels: dict, params: dict) -> tuple[str, ...]:
    """Metric groups an entry gets, in table order: the cheap ones always; the heavy ones for HEAVY_KINDS at
    k_detail (every k with `every_k`), zero mode only, and for the baseline."""
    heavy = labels["mask_kind"] in HEAVY_KINDS and labels.get("mode", "zero") in (None, "zero") \
        and (labels["mask_kind"] == "baseline" or labels["k_percent"] == params["k_detail"] or params["every_k"])
    return tuple(name for name, group in METRIC_GROUPS.items() if group.cost == "cheap" or heavy)


def outlier_masks(aggregate: dict, counts) -> list[tuple[dict, dict]]:
    """(labels, masks) of the top n entries of the aggregate for each n in counts (global, exact ties)."""
    from .selection import top_count_global
    return [(dict(mask_kind="top_entries", n_entries=int(n)), top_count_global(aggregate, int(n))) for n in counts]


def controls_match(plan) -> bool:
    """True when every control has its spot's count where its table entry says it is matched (per tensor or in
    total)."""
    spots = {(lab["k_percent"], lab["granularity"]): m for lab, m in plan if lab["mask_kind"] == "spot"}
    count = {"per_tensor": counts_per_tensor, "total": mask_count}
    for lab, m in plan:
        spot = spots.get((lab["k_percent"], lab["granularity"])) if lab.get("control_of") == "spot" else None
        matched_on = CONTROLS.pick(lab["mask_kind"]).matched_on if spot is not None else None
        if matched_on is not None and count[matched_on](m) != count[matched_on](spot):
            return False
    return True
