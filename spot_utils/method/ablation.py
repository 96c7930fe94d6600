"""Switching masked parameters off in place, restoring them bit-exactly, and the builders of the control masks
stage 04 ablates beside the spot to tell specific damage from damage of the same size (their rows, with what each
is matched on: method/mask_kinds.py; docs/METHOD.md, Controls)."""
from __future__ import annotations

from contextlib import contextmanager
import hashlib

import numpy as np
import torch

from .scoring import clean_name
from .selection import top_count

MODES = ("zero", "mean", "noise")


def _named_parameters(model) -> dict[str, torch.nn.Parameter]:
    return {clean_name(n): p for n, p in model.named_parameters()}


def check_masks_fit(model, masks: dict[str, torch.Tensor]) -> None:
    """Raise, naming the first offender, if a mask's name or shape does not fit the model."""
    params = _named_parameters(model)
    for n, m in masks.items():
        if n not in params:
            raise KeyError(f"mask for {n!r}: the model has no such parameter")
        if tuple(m.shape) != tuple(params[n].shape):
            raise ValueError(f"mask for {n!r} has shape {tuple(m.shape)}, the parameter has {tuple(params[n].shape)}")
        if m.dtype != torch.bool:
            raise TypeError(f"mask for {n!r} must be torch.bool, got {m.dtype}")


def _seed_for(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & (2**63 - 1)


def _replacement(p: torch.Tensor, index: torch.Tensor, mode: str, seed: int, name: str) -> torch.Tensor:
    """Values written at the masked entries: 0, the tensor's mean, or mean + std · ε (ε seeded by seed and name)."""
    if mode == "zero":
        return torch.zeros(len(index), dtype=p.dtype, device=p.device)
    whole = p.detach().float()
    mu, sigma = whole.mean(), whole.std()
    if mode == "mean":
        return mu.expand(len(index)).to(p.dtype)
    gen = torch.Generator().manual_seed(_seed_for(seed, name))
    eps = torch.randn(len(index), generator=gen).to(p.device)
    return (mu + sigma * eps).to(p.dtype)


@contextmanager
def ablated(model, masks: dict[str, torch.Tensor], mode: str = "zero", seed: int = 0):
    """Overwrite the masked entries in place (zero / mean / noise); restore them bit-exactly on exit.

    Only the masked entries are saved, never a copy of the model. Masks are checked against the model
    before anything is touched.

    Args:
        masks: {parameter name: bool mask of the parameter's shape}.
        mode: a name in MODES: 'zero', 'mean' (the tensor's mean) or 'noise' (mean + std · N(0, 1)).
        seed: seeds the noise of 'noise'.

    Yields:
        The model, ablated until the block ends.
    """
    if mode not in MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; accepted: {MODES}")
    check_masks_fit(model, masks)
    params = _named_parameters(model)
    saved = []
    try:
        with torch.no_grad():
            for n, m in masks.items():
                p = params[n]
                flat = p.data.view(-1)
                index = m.reshape(-1).nonzero().squeeze(1).to(p.device)
                if len(index) == 0:
                    continue
                saved.append((flat, index, flat[index].clone()))
                flat[index] = _replacement(p, index, mode, seed, n)
        yield model
    finally:
        with torch.no_grad():
            for flat, index, values in reversed(saved):
                flat[index] = values


def random_per_tensor(like: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random masks with the same count as `like` in every tensor (uniform within each tensor)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for n, m in like.items():
        mask = torch.zeros(m.numel(), dtype=torch.bool)
        mask[torch.randperm(m.numel(), generator=gen)[: int(m.sum())]] = True
        out[n] = mask.view(m.shape)
    return out


def random_uniform(like: dict[str, torch.Tensor], seed: int, shapes: dict[str, tuple] | None = None) -> dict[str, torch.Tensor]:
    """Random mask with `like`'s total count spread uniformly over all entries of `shapes` (default: like's)."""
    shapes = shapes or {n: tuple(m.shape) for n, m in like.items()}
    return random_uniform_of(int(sum(int(m.sum()) for m in like.values())), seed, shapes)


def random_uniform_of(total: int, seed: int, shapes: dict[str, tuple]) -> dict[str, torch.Tensor]:
    """`total` entries drawn uniformly over all entries of `shapes`: the count per tensor from a multivariate
    hypergeometric, then a random set within each tensor. The draw is seeded by (seed, total): masks of one seed at
    different sizes are independent draws, never nested (so the points of random_uniform's curve do not share one
    draw's luck)."""
    sizes = np.array([int(np.prod(s)) for s in shapes.values()], dtype=np.int64)
    draw_seed = _seed_for(seed, f"random_uniform/{total}")
    counts = np.random.default_rng(draw_seed).multivariate_hypergeometric(sizes, total)
    gen = torch.Generator().manual_seed(draw_seed)
    out = {}
    for (n, shape), size, c in zip(shapes.items(), sizes, counts):
        mask = torch.zeros(int(size), dtype=torch.bool)
        mask[torch.randperm(int(size), generator=gen)[: int(c)]] = True
        out[n] = mask.view(shape)
    return out


def magnitude_per_tensor(model, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Top-|θ| masks with `like`'s count in every tensor: the magnitude control. (Stage 03's magnitude_global, the
    global top-k |θ|, is a reference region for the overlaps and the mask modes, never ablated as a control.)"""
    params = _named_parameters(model)
    return {n: top_count(params[n].detach().float().abs().cpu(), int(m.sum())) for n, m in like.items()}
