"""Where parameters sit: layer index and module type of each name, and a mask's distribution over them."""
from __future__ import annotations

import copy
import re

import pandas as pd
import torch

from .mask_kinds import kinds

MODULE_TYPES = ("q", "k", "v", "o", "gate", "up", "down", "norm", "other")
_PATTERNS = [("q", r"q_proj"), ("k", r"k_proj"), ("v", r"v_proj"), ("o", r"o_proj"), ("gate", r"gate_proj"),
             ("up", r"up_proj"), ("down", r"down_proj"), ("norm", r"norm")]


def param_location(name: str) -> tuple[int | None, str]:
    """(decoder layer index or None, module type) of a parameter name."""
    m = re.search(r"layers?\.(\d+)\.", name)
    layer = int(m.group(1)) if m else None
    module = next((t for t, pat in _PATTERNS if re.search(pat, name)), "other")
    return layer, module


def is_vector(name: str, t: torch.Tensor) -> bool:
    """Norm weights and biases: the 1-D parameters."""
    return t.ndim < 2


def distribution(masks: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per tensor: layer, module, selected count, size, share = selected / size."""
    rows = []
    for n, m in masks.items():
        layer, module = param_location(n)
        rows.append(dict(param=n, layer=layer, module=module, vector=is_vector(n, m),
                         selected=int(m.sum()), size=m.numel()))
    df = pd.DataFrame(rows)
    df["share"] = df.selected / df["size"]
    return df


def summary(masks: dict[str, torch.Tensor]) -> dict:
    """Total count, share in norm/bias vectors, number of tensors that received no entry."""
    df = distribution(masks)
    total = int(df.selected.sum())
    return dict(total=total, in_vectors=int(df[df.vector].selected.sum()),
                vector_share=float(df[df.vector].selected.sum() / total) if total else 0.0,
                empty_tensors=int((df.selected == 0).sum()), tensors=len(df))


PROFILES = ("module", "layer", "depth")


def profile(masks_by_label: dict[str, dict[str, torch.Tensor]], by: str = "module", bins: int = 10) -> pd.DataFrame:
    """Where each labelled mask sits, normalised by tensor size, in one long table.

    by: 'module' (q/k/v/o/gate/up/down/norm/other), 'layer' (decoder layer index) or 'depth' (relative layer
    position layer / (n_layers − 1) in `bins` equal bins, so models of different depth line up).
    Columns: label, group, selected, size, share = selected / size, enrichment = share / the label's overall share.
    """
    if by not in PROFILES:
        raise ValueError(f"unknown profile {by!r}; accepted: {PROFILES}")
    frames = []
    for label, masks in masks_by_label.items():
        df = distribution(masks)
        if by == "depth":
            layers = df.layer.dropna()
            top = max(layers.max(), 1) if len(layers) else 1
            df["group"] = (df.layer / top * bins).clip(upper=bins - 1).floordiv(1) / bins
        else:
            df["group"] = df[by]
        g = df.dropna(subset=["group"]).groupby("group", sort=True).agg(selected=("selected", "sum"),
                                                                       size=("size", "sum")).reset_index()
        overall = df.selected.sum() / df["size"].sum()
        g["share"] = g.selected / g["size"]
        g["enrichment"] = g.share / overall if overall else float("nan")
        g.insert(0, "label", label)
        frames.append(g)
    return pd.concat(frames, ignore_index=True)


MAP_KINDS = kinds(layer_map=True)  # the kinds stage 03 maps per layer and module (the mask-kind table's layer_map)


def layer_module_rows(masks: dict[str, torch.Tensor], **labels) -> list[dict]:
    """Selected entries and entries in all per (layer, module type) of a mask, `labels` (kind, k_percent) in every
    row: the small summary a report keeps (reports/<run>/03_layers_modules.csv) to map any mask without runs/."""
    d = distribution(masks).groupby(["layer", "module"], dropna=False).agg(
        selected=("selected", "sum"), size=("size", "sum")).reset_index()
    return [dict(labels, **r) for r in d.to_dict("records")]


NORM_FORMS = {"x·w": "zero switches the unit off (its output is 0, plus any bias)",
              "x·(1+w)": "zero resets the scale to 1 (the unit keeps normalising, unscaled)"}


def norm_forms(model) -> dict[str, str]:
    """{normalisation class name: 'x·w' or 'x·(1+w)'} of the model's norm modules with a 1-D weight, found by
    running one module of each class on random input with its weight (and bias) zeroed: a zero output is the
    x·w form (RMSNorm / LayerNorm of Llama, Qwen2, ...), a nonzero one the x·(1+w) form (Gemma)."""
    forms = {}
    for module in model.modules():
        name = type(module).__name__
        weight = getattr(module, "weight", None)
        if "Norm" not in name or name in forms or not isinstance(weight, torch.nn.Parameter) or weight.ndim != 1:
            continue
        probe = copy.deepcopy(module).float()
        with torch.no_grad():
            for p in probe.parameters():
                p.zero_()
            out = probe(torch.randn(2, weight.shape[0], generator=torch.Generator().manual_seed(0)))
        forms[name] = "x·w" if float(out.abs().max()) == 0.0 else "x·(1+w)"
    return forms
