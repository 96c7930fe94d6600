"""Where parameters sit: layer index and module type of each name, and a mask's distribution over them."""
from __future__ import annotations

import re

import pandas as pd
import torch

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
