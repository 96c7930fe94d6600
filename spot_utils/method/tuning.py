"""Fine-tuning a model on a few of its parameters (docs/METHOD.md, Tuning): sparse AdamW that trains only the entries
of a mask and keeps every other entry bit-identical, LoRA adapters of a size matched to a sparse arm, the learning-rate
schedule every arm shares and the training loop."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch

from .losses import pad_batch, sequence_losses
from .mask_kinds import MASK_KINDS
from .scoring import clean_name

LORA, FULL, UNTRAINED = "lora", "full", "untrained"
# the arms of stage 07: a mask kind stage 04 can ablate beside the spot trains its mask's entries (sparse arms); LoRA
# matched to each sparse arm's count; every parameter. The untrained model, the reference of every gain, is always
# measured.
SPARSE_ARMS = tuple(n for n, k in MASK_KINDS.items() if k.ablation in ("spot", "control", "stage03"))
TUNING_ARMS = (*SPARSE_ARMS, LORA, FULL)
DEFAULT_ARMS = ("spot", "authors_spot", "code_over_general", "random", "random_uniform", "magnitude", LORA, FULL)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Llama / Gemma names
WARMUP_FRACTION = 0.1  # of the steps: linear warm-up, then cosine decay to FINAL_LR_FRACTION of the peak
FINAL_LR_FRACTION = 0.1


class SparseAdamW:
    """AdamW (decoupled weight decay, bias correction) over the selected entries of each parameter only.

    Per parameter it keeps the flat indices of the selected entries and two float32 moments of that length, so its
    state grows with the number of selected entries, not with the model. A step gathers the selected gradients and
    values, updates the gathered values and scatters them back with index_copy_: no operation writes an unselected
    entry, which stays bit-identical. The full .grad still exists during backward (zero_grad drops it).

    Args:
        params: {name: parameter} to train (e.g. sparse_parameters' result).
        masks: {name: bool mask of the parameter's shape}; every name of `params` has one.
        lr, betas, eps, weight_decay: as torch.optim.AdamW; `param_groups[0]['lr']` is read at every step, so a
            schedule sets it as it would for a torch optimizer.
    """

    def __init__(self, params: Mapping[str, torch.nn.Parameter], masks: Mapping[str, torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        self.param_groups = [dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)]
        self.params, self.index, self.exp_avg, self.exp_avg_sq = {}, {}, {}, {}
        self.steps = 0
        for name, p in params.items():
            if not p.is_contiguous():
                raise ValueError(f"{name}: sparse AdamW writes into the flat view of a contiguous parameter")
            mask = masks[name]
            if tuple(mask.shape) != tuple(p.shape):
                raise ValueError(f"mask for {name!r} has shape {tuple(mask.shape)}, the parameter {tuple(p.shape)}")
            index = mask.reshape(-1).nonzero().squeeze(1).to(p.device)
            if len(index) == 0:
                continue
            self.params[name], self.index[name] = p, index
            self.exp_avg[name] = torch.zeros(len(index), dtype=torch.float32, device=p.device)
            self.exp_avg_sq[name] = torch.zeros(len(index), dtype=torch.float32, device=p.device)

    @property
    def n_selected(self) -> int:
        """Entries the optimizer trains (the length of its state)."""
        return sum(len(i) for i in self.index.values())

    def state_bytes(self) -> int:
        """Bytes of the optimizer's state: indices and both moments."""
        return sum(t.nbytes for d in (self.index, self.exp_avg, self.exp_avg_sq) for t in d.values())

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step on the selected entries of every parameter that has a gradient."""
        group = self.param_groups[0]
        lr, (beta1, beta2), eps, decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        self.steps += 1
        correction1, correction2 = 1 - beta1 ** self.steps, 1 - beta2 ** self.steps
        for name, p in self.params.items():
            if p.grad is None:
                continue
            index, m, v = self.index[name], self.exp_avg[name], self.exp_avg_sq[name]
            grad = p.grad.reshape(-1).index_select(0, index).float()
            flat = p.view(-1)
            values = flat.index_select(0, index).float()
            values.mul_(1 - lr * decay)
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / math.sqrt(correction2)).add_(eps)
            values.addcdiv_(m, denom, value=-lr / correction1)
            flat.index_copy_(0, index, values.to(p.dtype))

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None


def sparse_parameters(model, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.nn.Parameter]:
    """The parameters with a selected entry, by name; every other parameter of the model gets requires_grad False
    (backward then computes no gradient for it).

    Args:
        model: the model to train.
        masks: {name: bool mask} (a MaskFile reads one tensor at a time).

    Returns:
        {name: parameter} of the parameters with at least one selected entry.
    """
    chosen = {}
    for raw, p in model.named_parameters():
        name = clean_name(raw)
        selected = name in masks and bool(masks[name].any())
        p.requires_grad_(selected)
        if selected:
            chosen[name] = p
    return chosen


def lora_modules(model, targets: Iterable[str] = LORA_TARGETS) -> dict[str, torch.nn.Linear]:
    """The linear modules LoRA adapts: {qualified name: module} whose last name part is one of `targets`."""
    wanted = set(targets)
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in wanted}


def lora_count(model, rank: int, targets: Iterable[str] = LORA_TARGETS) -> int:
    """Trainable entries of rank-`rank` LoRA on the target modules: rank · (d_in + d_out) summed over them."""
    return rank * sum(m.in_features + m.out_features for m in lora_modules(model, targets).values())


def matched_lora_rank(model, target_count: int, targets: Iterable[str] = LORA_TARGETS) -> int:
    """The rank ≥ 1 whose LoRA count is closest to `target_count` (the smaller rank on a tie)."""
    per_rank = lora_count(model, 1, targets)
    if per_rank == 0:
        raise ValueError(f"the model has no linear module named one of {sorted(targets)}")
    low = max(1, target_count // per_rank)
    return min((low, low + 1), key=lambda r: (abs(r * per_rank - target_count), r))


def lora_model(model, rank: int, targets: Iterable[str] = LORA_TARGETS, seed: int = 0):
    """`model` with rank-`rank` LoRA adapters (peft, alpha = rank, no dropout) on the target modules; only the
    adapters train. peft injects them into `model` itself.

    Returns:
        The peft model (its trainable count: trainable_count).
    """
    from peft import LoraConfig, get_peft_model  # deferred: peft imports heavy optional parts of transformers

    targets = sorted({n.rsplit(".", 1)[-1] for n in lora_modules(model, targets)})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=targets,
                                                bias="none"))


def trainable_count(model) -> int:
    """Entries that train: the numel of every parameter with requires_grad."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def scheduled_lr(step: int, steps: int, peak: float) -> float:
    """The learning rate of step `step` (0-based) of `steps`: linear warm-up over WARMUP_FRACTION of the steps, then
    cosine decay from `peak` to FINAL_LR_FRACTION · peak."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, optimizer, batches: list[list[torch.Tensor]], peak_lr: float) -> list[float]:
    """Train on `batches` in order, one optimizer step each, at scheduled_lr.

    Args:
        model: the model (its trainable parameters are the optimizer's).
        optimizer: a torch optimizer or SparseAdamW (both read param_groups' lr at each step).
        batches: lists of 1-D token tensors; every sequence weighs the same in a batch's mean loss.
        peak_lr: the schedule's peak learning rate.

    Returns:
        The mean training loss of every step.
    """
    device = next(model.parameters()).device
    model.train()
    losses = []
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(step, len(batches), peak_lr)
        ids, attention = pad_batch(batch, device)
        loss = sequence_losses(model, ids, attention, count_correct=False)[0].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
