"""Per-parameter importance on a corpus: S = θ ⊙ Σ_x ∇θ L(x) and its variants (SPEC §1)."""
from __future__ import annotations

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .io import atomic_path
from .losses import pad_batch, sequence_losses

CRITERIA = ("grad_x_weight", "abs_grad_x_weight", "fisher", "magnitude")
PER_SEQUENCE = ("abs_grad_x_weight", "fisher")


def clean_name(name: str) -> str:
    """Parameter name without DDP/FSDP/compile wrapper prefixes."""
    return re.sub(r"^(module\.|_orig_mod\.|_fsdp_wrapped_module\.)+", "", name).replace(
        "_fsdp_wrapped_module.", "").replace("_checkpoint_wrapped_module.", "")


def decoder_layers_prefix(model) -> str:
    """Qualified name of the ModuleList holding the decoder layers (the one with most parameters)."""
    best, best_size = None, -1
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > 0:
            size = sum(p.numel() for p in module.parameters())
            if size > best_size:
                best, best_size = name, size
    if best is None:
        raise ValueError(f"{type(model).__name__} has no ModuleList of decoder layers; pass include=")
    return clean_name(best) + "."


def scoped_parameters(model, include: Callable | None = None) -> dict[str, torch.nn.Parameter]:
    """The parameters a score covers: decoder layers by default, else those where include(name, p) is true.

    Tied parameters appear once (named_parameters de-duplicates them).
    """
    if include is None:
        prefix = decoder_layers_prefix(model)
        include = lambda name, p: name.startswith(prefix)  # noqa: E731
    return {clean_name(n): p for n, p in model.named_parameters() if include(clean_name(n), p)}


@contextmanager
def _scoring_state(model, params: dict[str, torch.nn.Parameter]):
    """Only `params` require grad, eval mode, no grads; everything restored on exit."""
    all_params = list(model.parameters())
    flags = [p.requires_grad for p in all_params]
    grads = [p.grad for p in all_params]
    was_training = model.training
    scoped = {id(p) for p in params.values()}
    try:
        for p in all_params:
            p.grad = None
            p.requires_grad_(id(p) in scoped)
        model.eval()
        yield
    finally:
        for p, flag, grad in zip(all_params, flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)


def score(model, sequences: Iterable[torch.Tensor], criterion: str = "grad_x_weight", batch_size: int = 8,
          include: Callable | None = None, name: str | None = None, checkpoint_dir=None,
          checkpoint_every: int | None = None) -> dict[str, torch.Tensor]:
    """Importance of every scoped parameter on `sequences` (float32, CPU, the parameter's shape).

    grad_x_weight: θ ⊙ Σ_x ∇L(x) (signed); abs_grad_x_weight: Σ_x |θ ⊙ ∇L(x)|; fisher: Σ_x (∇L(x))²;
    magnitude: |θ|. L(x) is the mean next-token loss of x; a batch backpropagates Σ_b L(x_b), so the
    result does not depend on batch_size. Gradients are folded into fp32 accumulators by
    post-accumulate-grad hooks and freed at once. With checkpoint_dir, the accumulators and position
    are saved atomically every `checkpoint_every` sequences and a rerun resumes from there.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; accepted: {CRITERIA}")
    label = name or "corpus"
    params = scoped_parameters(model, include)
    if not params:
        raise ValueError("no parameter is in scope: check `include`")
    if criterion == "magnitude":
        return {n: p.detach().float().abs().cpu() for n, p in params.items()}
    sequences = [torch.as_tensor(s) for s in sequences]
    if not sequences:
        raise ValueError(f"empty corpus for {label!r}: nothing to score")
    for i, s in enumerate(sequences):
        if s.ndim != 1 or len(s) < 2:
            raise ValueError(f"{label}: sequence {i} must be a 1-D tensor of at least 2 token ids, "
                             f"got shape {tuple(s.shape)}")
    if criterion in PER_SEQUENCE:
        batch_size = 1  # exact per-sequence gradients
    device = next(iter(params.values())).device
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    start = _resume(checkpoint_dir, acc, criterion, label, len(sequences))
    bad = torch.zeros((), dtype=torch.bool, device=device)

    def fold(n: str) -> Callable:
        def hook(p: torch.Tensor) -> None:
            g = p.grad.float()
            bad.logical_or_(~torch.isfinite(g).all())
            if criterion == "grad_x_weight":
                acc[n].add_(g)  # Σ∇L; multiplied by θ once at the end
            elif criterion == "abs_grad_x_weight":
                acc[n].add_((g * p.detach().float()).abs_())
            else:
                acc[n].addcmul_(g, g)
            p.grad = None
        return hook

    handles = [p.register_post_accumulate_grad_hook(fold(n)) for n, p in params.items()]
    try:
        with _scoring_state(model, params):
            bar = tqdm(total=len(sequences), initial=start, desc=f"scoring {label}", unit="seq")
            for lo in range(start, len(sequences), batch_size):
                batch = sequences[lo: lo + batch_size]
                loss, _, _ = sequence_losses(model, *pad_batch(batch, device))
                loss.sum().backward()
                if bad.item() or not torch.isfinite(loss).all():
                    worst = [lo + i for i, v in enumerate(loss.tolist()) if not torch.isfinite(torch.tensor(v))]
                    where = f"sequence {worst[0]}" if worst else f"sequences {lo}-{lo + len(batch) - 1}"
                    raise FloatingPointError(f"NaN/inf gradient while scoring {label!r}, {where}")
                bar.update(len(batch))
                done = lo + len(batch)
                if checkpoint_dir and checkpoint_every and done < len(sequences) and \
                        done // checkpoint_every > lo // checkpoint_every:
                    _save_checkpoint(checkpoint_dir, acc, criterion, label, done, len(sequences))
            bar.close()
    finally:
        for h in handles:
            h.remove()
    if criterion == "grad_x_weight":
        for n, p in params.items():
            acc[n].mul_(p.detach().float())
    if checkpoint_dir:
        _checkpoint_path(checkpoint_dir).unlink(missing_ok=True)
    return {n: a.cpu() for n, a in acc.items()}


def _checkpoint_path(checkpoint_dir) -> Path:
    return Path(checkpoint_dir) / "checkpoint.safetensors"


def _save_checkpoint(checkpoint_dir, acc, criterion, label, position, total) -> None:
    """Accumulators and position in one file, written atomically: a kill leaves the previous one."""
    state = dict(criterion=criterion, name=label, position=position, total=total)
    with atomic_path(_checkpoint_path(checkpoint_dir)) as tmp:
        save_file({n: a.cpu().contiguous() for n, a in acc.items()}, str(tmp),
                  metadata={"state": json.dumps(state)})


def _resume(checkpoint_dir, acc, criterion, label, total) -> int:
    """Load accumulators from a checkpoint of the same job; return the position to continue from."""
    path = _checkpoint_path(checkpoint_dir) if checkpoint_dir else None
    if path is None or not path.exists():
        return 0
    with safe_open(str(path), framework="pt") as f:
        state = json.loads(f.metadata()["state"])
        if (state["criterion"], state["name"], state["total"]) != (criterion, label, total):
            raise ValueError(f"checkpoint {path} belongs to another job {state}; "
                             "remove it or use another checkpoint_dir")
        if set(f.keys()) != set(acc):
            raise ValueError(f"checkpoint {path} covers other parameters than this model's scope")
        for n, a in acc.items():
            a.copy_(f.get_tensor(n))
    return state["position"]
