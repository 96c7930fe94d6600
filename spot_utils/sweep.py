"""The ablation experiment: evaluate masks against the baseline on the same held-out items (SPEC §4)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .ablation import ablated
from .evaluation import item_losses
from .masks import mask_count
from .metrics import loss_rows, relative_rise, row


def evaluate_mask(model, subsets, masks, baseline: pd.DataFrame, labels: dict, batch_size: int = 8,
                  mode: str = "zero", seed: int = 0) -> tuple[list[dict], pd.DataFrame]:
    """Rows (loss, accuracy, loss_rise per subset) and per-item losses of the model with `masks` ablated."""
    labels = dict(labels, mode=mode, n_entries=mask_count(masks))
    with ablated(model, masks, mode=mode, seed=seed):
        items = item_losses(model, subsets, batch_size, desc=f"{labels.get('mask_kind')} k={labels.get('k_percent')}")
    return loss_rows(items, baseline, **labels), items


def selectivity_rows(items: pd.DataFrame, baseline: pd.DataFrame, code_subsets, general_subset: str,
                     labels: dict, threshold: float = 0.01) -> list[dict]:
    """code_rise (mean r over code subsets), general_rise (r on the general subset) and their ratio.

    The ratio is reported only when both rises exceed `threshold` (SPEC §4).
    """
    def rises(frame):
        return {s: g.sort_values("item")["loss"].to_numpy() for s, g in frame.groupby("subset")}
    abl, base = rises(items), rises(baseline)
    code = [s for s in code_subsets if s in abl]
    code_rise = float(np.mean([relative_rise(abl[s], base[s]) for s in code]))
    general_rise = relative_rise(abl[general_subset], base[general_subset])
    rows = [row(metric="code_rise", subset="code", value=code_rise, n=len(code), **labels),
            row(metric="general_rise", subset=general_subset, value=general_rise,
                n=len(abl[general_subset]), **labels)]
    if code_rise > threshold and general_rise > threshold:
        rows.append(row(metric="selectivity", subset=f"code/{general_subset}", value=code_rise / general_rise,
                        n=len(code), **labels))
    return rows


def mask_plan(params: dict, model):
    """(labels, masks) for every ablation of the run: at each k the spot, code_over_general and
    random_uniform; at k_detail also random per tensor (every seed), magnitude and code_minus_general."""
    from .ablation import magnitude_per_tensor, random_per_tensor, random_uniform
    from .masks import load_masks
    from .runs import mask_path
    from .scoring import scoped_parameters

    shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
    base = dict(model=params["model"], criterion=params["criterion"], aggregation=params["aggregation"])
    seeds = params["random_seeds"]
    for k in params["k_grid"]:
        for gran in params["granularities"]:
            spot, _ = load_masks(mask_path(params, "spot", k, gran))
            label = dict(base, k_percent=k, granularity=gran)
            yield dict(label, mask_kind="spot"), spot
            yield dict(label, mask_kind="random_uniform", seed=seeds[0], control_of="spot"), \
                random_uniform(spot, seeds[0], shapes)
            if k == params["k_detail"]:
                for seed in seeds:
                    yield dict(label, mask_kind="random", seed=seed, control_of="spot"), random_per_tensor(spot, seed)
                yield dict(label, mask_kind="magnitude", control_of="spot"), magnitude_per_tensor(model, spot)
        label = dict(base, k_percent=k, granularity="global")
        yield dict(label, mask_kind="code_over_general"), load_masks(mask_path(params, "code_over_general", k))[0]
        if k == params["k_detail"]:
            yield dict(label, mask_kind="code_minus_general"), load_masks(mask_path(params, "code_minus_general", k))[0]


def curve_frame(rows: list[dict], code_subsets, general_subsets) -> pd.DataFrame:
    """Per (mask, k, seed): mean loss_rise over code subsets ('code') and each general subset's rise."""
    df = pd.DataFrame(rows)
    df = df[df.metric == "loss_rise"].copy()
    df["group"] = df.subset.where(df.subset.isin(general_subsets), "code")
    df = df[df.subset.isin(list(code_subsets) + list(general_subsets))]
    keys = ["mask_kind", "k_percent", "granularity", "seed", "group"]
    return df.fillna({"seed": -1}).groupby(keys, sort=False).value.mean().reset_index()


def controls_match(plan) -> bool:
    """True when every control has its spot's count: per tensor (random, magnitude) or in total (random_uniform)."""
    from .masks import counts_per_tensor
    spots = {(lab["k_percent"], lab["granularity"]): m for lab, m in plan if lab["mask_kind"] == "spot"}
    for lab, m in plan:
        spot = spots.get((lab["k_percent"], lab["granularity"])) if lab.get("control_of") == "spot" else None
        if spot is None:
            continue
        if lab["mask_kind"] == "random_uniform":
            if mask_count(m) != mask_count(spot):
                return False
        elif counts_per_tensor(m) != counts_per_tensor(spot):
            return False
    return True
