"""Masks on disk (bit-packed safetensors with a manifest) and mask algebra (docs/METHOD.md, Masks on disk)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.torch import save_file
import torch

from ..base.io import _json_default, atomic_path


def save_masks(path: str | os.PathLike, masks: dict[str, torch.Tensor], manifest: dict) -> None:
    """Write masks as np.packbits(flat, bitorder="little") per tensor; shapes, manifest and a SHA-256 of the
    content in the metadata. Identical masks and manifest give identical bytes (one metadata key, sorted JSON)."""
    packed, shapes = {}, {}
    for n, m in masks.items():
        if m.dtype != torch.bool:
            raise TypeError(f"mask {n!r} must be torch.bool, got {m.dtype}")
        packed[n] = torch.from_numpy(np.packbits(m.cpu().numpy().reshape(-1), bitorder="little"))
        shapes[n] = list(m.shape)
    manifest = dict(manifest, counts={n: int(m.sum()) for n, m in masks.items()},
                    total=int(sum(int(m.sum()) for m in masks.values())))
    manifest = json.loads(json.dumps(manifest, default=_json_default))  # what load_masks will read back
    header = {"shapes": shapes, "manifest": manifest, "sha256": _content_hash(shapes, manifest, packed)}
    with atomic_path(path) as tmp:
        # safetensors writes its metadata map in arbitrary order: a single key keeps the bytes reproducible
        save_file(packed, str(tmp), metadata={_KEY: json.dumps(header, sort_keys=True)})


def load_masks(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read masks written by save_masks, checking their content hash; returns (masks, manifest)."""
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise ValueError(f"cannot read masks from {path}: it is {what}, not a mask file (.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[_KEY])
            shapes, manifest = header["shapes"], header["manifest"]
            packed = {n: f.get_tensor(n) for n in shapes}
    except KeyError as e:
        raise ValueError(f"cannot read masks from {path}: {e} is missing (not a mask file written by save_masks)") from e
    except Exception as e:  # safetensors raises its own errors for files that are not safetensors
        raise ValueError(f"cannot read masks from {path}: {e}") from e
    if header.get("sha256") != _content_hash(shapes, manifest, packed):
        raise ValueError(f"mask file {path} is corrupt: its content does not match its SHA-256")
    masks = {n: _unpack(path, n, packed[n].numpy(), shape) for n, shape in shapes.items()}
    _recount(path, masks, manifest)
    return masks, manifest


def _unpack(path: Path, name: str, bits: np.ndarray, shape: list[int]) -> torch.Tensor:
    """The bool mask of `shape` packed in `bits`, which must hold exactly its bits (padding zero)."""
    numel = int(np.prod(shape))
    if bits.dtype != np.uint8 or bits.shape != ((numel + 7) // 8,):
        raise ValueError(f"mask file {path} is inconsistent: tensor {name!r} of shape {shape} needs "
                         f"{(numel + 7) // 8} packed bytes, the file holds {bits.size} of {bits.dtype}")
    flat = np.unpackbits(bits, bitorder="little")
    if flat[numel:].any():
        raise ValueError(f"mask file {path} is inconsistent: tensor {name!r} has bits set past its {numel} entries")
    return torch.from_numpy(flat[:numel].astype(bool)).reshape(shape)


def _recount(path: Path, masks: dict[str, torch.Tensor], manifest: dict) -> None:
    """Check the manifest's counts (per tensor and total) against the bits themselves."""
    counts = counts_per_tensor(masks)
    recorded = manifest.get("counts")
    if recorded != counts or manifest.get("total") != sum(counts.values()):
        wrong = sorted(n for n in set(counts) | set(recorded or {}) if (recorded or {}).get(n) != counts.get(n))
        raise ValueError(f"mask file {path} is inconsistent: its manifest records {manifest.get('total')} entries "
                         f"(counts differ for {wrong[:5]}{' ...' if len(wrong) > 5 else ''}), its bits hold "
                         f"{sum(counts.values())}")


_KEY = "spot_masks"


def _content_hash(shapes: dict, manifest: dict, packed: dict[str, torch.Tensor]) -> str:
    """SHA-256 of shapes, manifest and packed bits, in a fixed order."""
    h = hashlib.sha256(json.dumps({"shapes": shapes, "manifest": manifest}, sort_keys=True).encode())
    for n in sorted(shapes):
        h.update(n.encode() + b"\0" + packed[n].numpy().tobytes())
    return h.hexdigest()


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
