"""Masks on disk (bit-packed safetensors with a manifest) and mask algebra (docs/METHOD.md, Masks on disk)."""
from __future__ import annotations

from collections.abc import Mapping
import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.torch import save_file
import torch

from ..base.io import _json_default, atomic_path


class PackedMasks(Mapping):
    """Masks held bit-packed (np.packbits, little bit order: one bit per entry), read as bool tensors: m[name]
    unpacks that tensor only. Built tensor by tensor with add(name, bool mask) or add_packed; `counts` and `shapes`
    need no unpacking. What selection returns, so a model's masks in flight take E/8 bytes, not E."""

    def __init__(self):
        self.packed: dict[str, torch.Tensor] = {}
        self.shapes: dict[str, tuple] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, mask: torch.Tensor) -> None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask {name!r} must be torch.bool, got {mask.dtype}")
        self.add_packed(name, pack(mask), tuple(mask.shape), int(mask.sum()))

    def add_packed(self, name: str, bits: torch.Tensor, shape: tuple, count: int) -> None:
        self.packed[name], self.shapes[name], self.counts[name] = bits, tuple(shape), count

    def __getitem__(self, name: str) -> torch.Tensor:
        return unpack(self.packed[name], self.shapes[name])

    def __contains__(self, name) -> bool:
        return name in self.packed

    def __iter__(self):
        return iter(self.packed)

    def __len__(self):
        return len(self.packed)


def pack(mask: torch.Tensor) -> torch.Tensor:
    """The bits of a bool mask, flattened, as uint8 (np.packbits, little bit order)."""
    return torch.from_numpy(np.packbits(mask.cpu().numpy().reshape(-1), bitorder="little"))


def unpack(bits: torch.Tensor, shape) -> torch.Tensor:
    """The bool mask of `shape` whose bits `pack` gave."""
    count = math.prod(shape)
    return torch.from_numpy(np.unpackbits(bits.numpy(), bitorder="little", count=count).astype(bool)).reshape(tuple(shape))


def packed_masks(masks: Mapping[str, torch.Tensor]) -> PackedMasks:
    """Masks as PackedMasks (the same object when they already are), one tensor unpacked at a time."""
    if isinstance(masks, PackedMasks):
        return masks
    out = PackedMasks()
    for n in masks:
        out.add(n, masks[n])
    return out


def save_masks(path: str | os.PathLike, masks: Mapping[str, torch.Tensor], manifest: dict) -> None:
    """Write masks as np.packbits(flat, bitorder="little") per tensor; shapes, manifest and a SHA-256 of the
    content in the metadata. Identical masks and manifest give identical bytes (one metadata key, sorted JSON).
    PackedMasks are written as they are held (no tensor unpacked)."""
    masks = packed_masks(masks)
    packed, shapes = masks.packed, {n: list(s) for n, s in masks.shapes.items()}
    manifest = dict(manifest, counts=dict(masks.counts), total=sum(masks.counts.values()))
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


class MaskFile(Mapping):
    """A mask file written by save_masks as a read-only mapping {name: bool mask}: one tensor's bits are read and
    unpacked per access, none kept. The content hash is checked when it is opened (reading one tensor's bits at
    a time); `shapes`, `counts` and `manifest` come from the header."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            what = "a folder" if self.path.is_dir() else "missing"
            raise ValueError(f"cannot read masks from {self.path}: it is {what}, not a mask file (.safetensors)")
        try:
            with safe_open(str(self.path), framework="pt") as f:
                header = json.loads((f.metadata() or {})[_KEY])
                self.shapes = {n: tuple(s) for n, s in header["shapes"].items()}
                self.manifest = header["manifest"]
                digest = _content_hash(header["shapes"], self.manifest, _Bits(f, header["shapes"]))
        except KeyError as e:
            raise ValueError(f"cannot read masks from {self.path}: {e} is missing (not a mask file written by save_masks)") from e
        except Exception as e:  # safetensors raises its own errors for files that are not safetensors
            raise ValueError(f"cannot read masks from {self.path}: {e}") from e
        if header.get("sha256") != digest:
            raise ValueError(f"mask file {self.path} is corrupt: its content does not match its SHA-256")
        self.counts = self.manifest.get("counts", {})

    def bits(self, name: str) -> torch.Tensor:
        """The packed bits of one tensor."""
        with safe_open(str(self.path), framework="pt") as f:
            return f.get_tensor(name)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.shapes:
            raise KeyError(f"{name!r} is not a mask of {self.path}")
        return unpack(self.bits(name), self.shapes[name])

    def __contains__(self, name) -> bool:  # from the header: Mapping's default would read the tensor
        return name in self.shapes

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)


class _Bits(Mapping):
    """The packed tensors of an open mask file, read on access (for the content hash, one at a time)."""

    def __init__(self, f, shapes):
        self._f, self._shapes = f, shapes

    def __getitem__(self, name):
        return self._f.get_tensor(name)

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self):
        return len(self._shapes)


def _content_hash(shapes: dict, manifest: dict, packed: dict[str, torch.Tensor]) -> str:
    """SHA-256 of shapes, manifest and packed bits, in a fixed order."""
    h = hashlib.sha256(json.dumps({"shapes": shapes, "manifest": manifest}, sort_keys=True).encode())
    for n in sorted(shapes):
        h.update(n.encode() + b"\0" + packed[n].numpy().tobytes())
    return h.hexdigest()


def _combine(a: Mapping, b: Mapping, op) -> PackedMasks:
    """op of two masks tensor by tensor (one tensor of each unpacked at a time), kept packed."""
    out = PackedMasks()
    for n in list(a) + [n for n in b if n not in a]:
        x, y = a.get(n), b.get(n)
        if x is not None and y is not None and x.shape != y.shape:
            raise ValueError(f"masks of {n!r} have different shapes {tuple(x.shape)} and {tuple(y.shape)}")
        x = x if x is not None else torch.zeros_like(y)
        y = y if y is not None else torch.zeros_like(x)
        out.add(n, op(x, y))
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


def mask_count(masks: Mapping) -> int:
    """Number of selected entries."""
    if isinstance(masks, (PackedMasks, MaskFile)):
        return sum(masks.counts.values())
    return int(sum(int(m.sum()) for m in masks.values()))


def counts_per_tensor(masks: dict) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in masks.items()}
