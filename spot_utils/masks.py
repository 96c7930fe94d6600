"""Masks on disk (bit-packed safetensors with a manifest) and mask algebra (docs/METHOD.md, Masks on disk)."""
from __future__ import annotations

import json
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .io import atomic_path


def save_masks(path: str | os.PathLike, masks: dict[str, torch.Tensor], manifest: dict) -> None:
    """Write masks as np.packbits(flat, bitorder="little") per tensor, shapes and manifest in the metadata."""
    packed, shapes = {}, {}
    for n, m in masks.items():
        if m.dtype != torch.bool:
            raise TypeError(f"mask {n!r} must be torch.bool, got {m.dtype}")
        packed[n] = torch.from_numpy(np.packbits(m.cpu().numpy().reshape(-1), bitorder="little"))
        shapes[n] = list(m.shape)
    manifest = dict(manifest, counts={n: int(m.sum()) for n, m in masks.items()},
                    total=int(sum(int(m.sum()) for m in masks.values())))
    with atomic_path(path) as tmp:
        save_file(packed, str(tmp), metadata={"shapes": json.dumps(shapes), "manifest": json.dumps(manifest)})


def load_masks(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read masks written by save_masks; returns (masks, manifest)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes, manifest = json.loads(meta["shapes"]), json.loads(meta["manifest"])
            masks = {}
            for n, shape in shapes.items():
                count = int(np.prod(shape))
                bits = np.unpackbits(f.get_tensor(n).numpy(), bitorder="little", count=count)
                masks[n] = torch.from_numpy(bits.astype(bool)).reshape(shape)
    except (KeyError, json.JSONDecodeError, OSError, Exception) as e:  # safetensors raises its own errors
        raise ValueError(f"cannot read masks from {path}: {e}") from e
    for n, m in masks.items():
        if int(m.sum()) != manifest["counts"][n]:
            raise ValueError(f"mask file {path} is corrupt: count of {n!r} does not match its manifest")
    return masks, manifest


def _combine(a: dict, b: dict, op) -> dict[str, torch.Tensor]:
    out = {}
    for n in list(a) + [n for n in b if n not in a]:
        x, y = a.get(n), b.get(n)
        if x is not None and y is not None and x.shape != y.shape:
            raise ValueError(f"masks of {n!r} have different shapes {tuple(x.shape)} and {tuple(y.shape)}")
        x = x if x is not None else torch.zeros_like(y)
        y = y if y is not None else torch.zeros_like(x)
        out[n] = op(x, y)
    return out


def mask_and(a: dict, b: dict) -> dict[str, torch.Tensor]:
    """Entries in both (a missing tensor counts as all False)."""
    return _combine(a, b, torch.logical_and)


def mask_or(a: dict, b: dict) -> dict[str, torch.Tensor]:
    """Entries in either."""
    return _combine(a, b, torch.logical_or)


def mask_minus(a: dict, b: dict) -> dict[str, torch.Tensor]:
    """Entries in a but not in b."""
    return _combine(a, b, lambda x, y: x & ~y)


def mask_count(masks: dict) -> int:
    """Number of selected entries."""
    return int(sum(int(m.sum()) for m in masks.values()))


def counts_per_tensor(masks: dict) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}
