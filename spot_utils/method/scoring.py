"""Per-parameter importance on a corpus: S = θ ⊙ Σ_x ∇θ L(x) and its variants (docs/METHOD.md, Scoring)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
import hashlib
import json
from pathlib import Path
import re
import time
from typing import Callable, Iterable
import warnings

from safetensors import safe_open
from safetensors.torch import save_file
import torch
from tqdm.auto import tqdm

from ..base.io import atomic_path
from ..base.registry import Registry
from .losses import pad_batch, sequence_losses


@dataclass(frozen=True)
class Criterion:
    """How one importance criterion turns gradients into scores.

    fold(acc, grad, param): add one backward's gradient of `param` into its float32 accumulator, in place (None:
    the criterion needs no gradients); finalize(acc, param): turn the summed accumulator into the score, in place,
    once after every sequence (and every rank) has been added (None: the sums are the scores); per_sequence: the
    fold is not linear in the gradient, so every backward holds one sequence (batch 1, exact).
    """
    fold: Callable | None
    finalize: Callable | None
    per_sequence: bool = False


CRITERIA = Registry("criterion")


def register_criterion(name: str, *, fold: Callable | None = None, finalize: Callable | None = None,
                       per_sequence: bool = False) -> Criterion:
    """Add an importance criterion under `name` (see Criterion); refused without fold or finalize."""
    if fold is None and finalize is None:
        raise ValueError(f"criterion {name!r} has no implementation: give fold= (per-backward gradient sum) "
                         "and/or finalize= (sums to scores)")
    for what, f in (("fold", fold), ("finalize", finalize)):
        if f is not None and not callable(f):
            raise TypeError(f"criterion {name!r}: {what} must be callable, got {type(f).__name__}")
    entry = Criterion(fold, finalize, bool(per_sequence))
    CRITERIA.add(name, entry)
    return entry


# Σ∇L is summed in fp32 (no fp32 copy of g) and multiplied by θ once at the end: sums over shards can be added
register_criterion("grad_x_weight", fold=lambda acc, g, p: acc.add_(g), finalize=lambda acc, p: acc.mul_(p.detach()))
register_criterion("abs_grad_x_weight", fold=lambda acc, g, p: acc.add_((g.float() * p.detach().float()).abs_()),
                   per_sequence=True)
register_criterion("fisher", fold=lambda acc, g, p: acc.addcmul_(g, g), per_sequence=True)  # fp32 product and sum
register_criterion("magnitude", finalize=lambda acc, p: acc.copy_(p.detach().abs()))
OVERLONG = ("chunk", "drop")


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


SCOPE_PARTS = ("decoder_layers", "embeddings", "lm_head", "other", "all")


def scope_filter(model, parts) -> Callable:
    """An `include` callable selecting named parts of the model (SCOPE_PARTS).

    decoder_layers: every parameter inside the decoder layers; embeddings: the input embedding; lm_head: the
    output projection (the embedding itself when tied); other: what is left (final norm, ...); all: everything.
    """
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = [p for p in parts if p not in SCOPE_PARTS]
    if unknown or not parts:
        raise ValueError(f"unknown scope parts {unknown or parts}; accepted: {SCOPE_PARTS}")
    prefix = decoder_layers_prefix(model)
    embed = {id(p) for p in model.get_input_embeddings().parameters()}
    out = model.get_output_embeddings()
    head = {id(p) for p in out.parameters()} if out is not None else set()

    def part(name, p):
        if name.startswith(prefix):
            return "decoder_layers"
        if id(p) in embed:
            return "embeddings"
        return "lm_head" if id(p) in head else "other"

    def include(name, p):
        if "all" in parts:
            return True
        kind = part(name, p)
        # a tied embedding / LM head is one tensor: either part selects it
        return kind in parts or (kind == "embeddings" and id(p) in head and "lm_head" in parts)
    return include


def scoped_parameters(model, include=None) -> dict[str, torch.nn.Parameter]:
    """The parameters a score covers: decoder layers by default, else those where include(name, p) is true.

    `include` may also be a part name or a list of them (see scope_filter). Tied parameters appear once
    (named_parameters de-duplicates them).

    Returns:
        {clean parameter name (no wrapper prefixes): parameter}, in the model's order.
    """
    if include is None:
        include = ["decoder_layers"]
    if not callable(include):
        include = scope_filter(model, include)
    return {clean_name(n): p for n, p in model.named_parameters() if include(clean_name(n), p)}


@contextmanager
def scoring_state(model, params: dict[str, torch.nn.Parameter]):
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
          include=None, name: str | None = None, checkpoint_dir=None, checkpoint_every: int | None = None,
          *, max_len: int | None = None, overlong: str = "chunk", info: dict | None = None,
          other_checkpoint: str = "refuse") -> dict[str, torch.Tensor]:
    """Importance of every scoped parameter on `sequences` (float32, CPU, the parameter's shape).

    `criterion` is a name in CRITERIA (add one with register_criterion). grad_x_weight: θ ⊙ Σ_x ∇L(x) (signed); abs_grad_x_weight: Σ_x |θ ⊙ ∇L(x)|; fisher: Σ_x (∇L(x))²;
    magnitude: |θ|. L(x) is the mean next-token loss of x; a batch backpropagates Σ_b L(x_b), so the
    result does not depend on batch_size (the per-sequence criteria run one sequence per backward: exact,
    and no per-sample gradient copies). The model may be float32, bfloat16 or float16: gradients are folded
    into float32 accumulators by post-accumulate-grad hooks and freed at once. Sequences longer than
    `max_len` are cut into max_len pieces (overlong="chunk") or left out ("drop"). With checkpoint_dir, the
    accumulators and position are saved atomically with their SHA-256 every `checkpoint_every` sequences and a
    rerun resumes from there (a damaged checkpoint is discarded with a warning and scoring starts over; one of
    another job raises, or with other_checkpoint="restart" is discarded likewise). A NaN/inf loss or gradient
    raises FloatingPointError naming `name` and the sequence.
    If `info` is a dict, it receives counts and timings (sequences, tokens, overlong, batch_size used,
    resumed_from, seconds, tokens_per_s).

    Args:
        sequences: 1-D token-id tensors. include: the scope, as in scoped_parameters. name: names the corpus in
            errors and checkpoints.

    Returns:
        {parameter name: score} over the scoped parameters.
    """
    params, acc = accumulate(model, sequences, criterion, batch_size, include, name, checkpoint_dir,
                             checkpoint_every, max_len=max_len, overlong=overlong, info=info,
                             other_checkpoint=other_checkpoint)
    return finalize(params, acc, criterion)


def finalize(params: dict[str, torch.nn.Parameter], acc: dict[str, torch.Tensor], criterion: str):
    """Scores (float32, CPU) from the accumulated sums (consumed) through the criterion's finalize, in place (no
    second full-size buffer): θ ⊙ Σ∇L for grad_x_weight, |θ| for magnitude, the sums themselves otherwise."""
    done = CRITERIA.pick(criterion).finalize
    if done is not None:
        for n, a in acc.items():
            done(a, params[n])
    return {n: a.cpu() for n, a in acc.items()}


def cap_length(sequences: list[torch.Tensor], max_len: int | None, overlong: str = "chunk"):
    """Sequences of at most max_len tokens: longer ones cut into pieces (pieces < 2 tokens dropped) or dropped.

    Returns (sequences, number of sequences that were longer than max_len).
    """
    out, _, n_over = cap_with_origin(sequences, max_len, overlong)
    return out, n_over


def cap_with_origin(sequences, max_len, overlong):
    """cap_length plus, for every output sequence, the index of the input sequence it came from."""
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
    if max_len is not None and max_len < 2:
        raise ValueError(f"max_len must be at least 2, got {max_len}")
    out, origin, n_over = [], [], 0
    for i, s in enumerate(sequences):
        if max_len is None or len(s) <= max_len:
            pieces = [s]
        else:
            n_over += 1
            pieces = [p for p in s.split(max_len) if len(p) >= 2] if overlong == "chunk" else []
        out += pieces
        origin += [i] * len(pieces)
    return out, origin, n_over


def accumulate(model, sequences, criterion="grad_x_weight", batch_size=8, include=None, name=None,
               checkpoint_dir=None, checkpoint_every=None, *, max_len=None, overlong="chunk", info=None,
               allow_empty=False, sequence_ids=None, other_checkpoint="refuse"):
    """(scoped parameters, fp32 accumulators on the model's device): the sums behind `score`, before finalize.

    The accumulators hold the criterion's sums (Σ∇L for grad_x_weight, θ is applied by finalize; zeros for a
    criterion without fold), so sums over shards can be added. Errors name sequences by their index in
    `sequences`, or by sequence_ids[index] when given (e.g. a shard's indices in the whole corpus).
    other_checkpoint: what a checkpoint of another job does (OTHER_CHECKPOINT; see resume_checkpoint).
    """
    fold = CRITERIA.pick(criterion).fold
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    label = name or "corpus"
    params = scoped_parameters(model, include)
    if not params:
        raise ValueError("no parameter is in scope: check `include`")
    device = next(iter(params.values())).device
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    if fold is None:  # nothing to sum (magnitude): finalize computes the score from the weights
        return params, acc
    sequences = checked_sequences(sequences, model.get_input_embeddings().weight.shape[0], label)
    ids = list(range(len(sequences))) if sequence_ids is None else list(sequence_ids)
    sequences, origin, n_over = cap_with_origin(sequences, max_len, overlong)
    origin = [ids[i] for i in origin]
    if not sequences and not allow_empty:
        raise ValueError(f"empty corpus for {label!r}: nothing to score")
    if CRITERIA[criterion].per_sequence:
        batch_size = 1  # exact per-sequence gradients
    job = checkpoint_dir and checkpoint_job(criterion, label, sequences, model_fingerprint(model),
                                            next(iter(params.values())).dtype, batch_size=batch_size,
                                            max_len=max_len, overlong=overlong)
    start = resume_checkpoint(checkpoint_dir, acc, job, other_checkpoint)
    began = time.perf_counter()
    pending = []  # (first position, per-sequence non-finite loss) since the last check: checked lazily (no sync)
    with folding_gradients(model, params, acc, fold):
        bar = tqdm(total=len(sequences), initial=start, desc=f"scoring {label}", unit="seq")
        for lo in range(start, len(sequences), batch_size):
            batch = sequences[lo: lo + batch_size]
            pending.append((lo, ~torch.isfinite(backward_batch(model, batch, device))))
            bar.update(len(batch))
            done = lo + len(batch)
            due = checkpoint_dir and checkpoint_every and done < len(sequences) and \
                done // checkpoint_every > lo // checkpoint_every
            if due or len(pending) >= 32 or done == len(sequences):
                _raise_if_nonfinite(pending, acc, label, origin)
            if due:
                save_checkpoint(checkpoint_dir, acc, job, done)
        bar.close()
    if info is not None:
        seconds = time.perf_counter() - began
        tokens = sum(len(s) for s in sequences[start:])
        info.update(sequences=len(sequences), tokens=sum(len(s) for s in sequences), overlong=n_over,
                    batch_size=batch_size,
                    overlong_policy=overlong if max_len else None, max_len=max_len, resumed_from=start,
                    seconds=round(seconds, 3), tokens_per_s=round(tokens / seconds, 1) if seconds > 0 else None)
    if checkpoint_dir:
        checkpoint_file(checkpoint_dir).unlink(missing_ok=True)
    return params, acc


def checked_sequences(sequences, vocab: int, label: str) -> list[torch.Tensor]:
    """The sequences as tensors, each refused (naming `label` and its index) unless it is a 1-D integer tensor of at
    least 2 token ids inside a vocabulary of `vocab` ids."""
    sequences = [torch.as_tensor(s) for s in sequences]
    for i, s in enumerate(sequences):
        if s.ndim != 1 or len(s) < 2:
            raise ValueError(f"{label}: sequence {i} must be a 1-D tensor of at least 2 token ids, "
                             f"got shape {tuple(s.shape)}")
        if s.dtype.is_floating_point or s.dtype.is_complex or s.dtype == torch.bool:
            raise TypeError(f"{label}: sequence {i} holds {s.dtype} values; token ids must be an integer tensor")
        low, high = int(s.min()), int(s.max())
        if low < 0 or high >= vocab:
            raise ValueError(f"{label}: sequence {i} has token id {low if low < 0 else high}, outside the "
                             f"model's vocabulary of {vocab} ids (0-{vocab - 1})")
    return sequences


@contextmanager
def folding_gradients(model, params: dict[str, torch.nn.Parameter], acc: dict[str, torch.Tensor], fold: Callable):
    """scoring_state(model, params), with each scoped parameter's gradient folded into acc[name] by `fold` (a
    Criterion's) as soon as backward has accumulated it, and freed: the one gradient loop of `score`, ddp and fsdp
    (a parameter sharded by FSDP folds this rank's shard of the gradient summed over ranks)."""
    def folding(a: torch.Tensor) -> Callable:
        def hook(p: torch.Tensor) -> None:
            fold(a, p.grad, p)  # NaN/inf in the gradient stays in the sum: the accumulators are checked
            p.grad = None
        return hook

    handles = [p.register_post_accumulate_grad_hook(folding(acc[n])) for n, p in params.items()]
    try:
        with scoring_state(model, params):
            yield
    finally:
        for h in handles:
            h.remove()


def backward_batch(model, batch: list[torch.Tensor], device, weight: float = 1.0) -> torch.Tensor:
    """Backpropagate weight × Σ_b L(x_b) of one right-padded batch; return its per-sequence losses (detached)."""
    loss, _, _ = sequence_losses(model, *pad_batch(batch, device), count_correct=False)
    (loss.sum() if weight == 1.0 else loss.sum() * weight).backward()
    return loss.detach()


def _raise_if_nonfinite(pending: list, acc: dict, label: str, origin: list[int]) -> None:
    """Raise FloatingPointError naming the sequence whose loss was NaN/inf, or, when only a gradient was, the
    sequences since the last check (a non-finite gradient leaves the accumulators non-finite); clear `pending`.

    origin[i] is the index reported for position i (the input sequence a chunk came from).
    """
    if not pending:
        return
    loss_bad = torch.cat([b for _, b in pending]).cpu()
    if loss_bad.any():
        where = f"sequence {origin[pending[0][0] + int(loss_bad.nonzero()[0])]}"
    elif not all(torch.isfinite(a).all() for a in acc.values()):
        seen = sorted(set(origin[pending[0][0]: pending[0][0] + len(loss_bad)]))
        where = "sequence " + str(seen[0]) if len(seen) == 1 else "one of sequences " + (
            ", ".join(map(str, seen)) if len(seen) <= 8 else f"{seen[0]}-{seen[-1]} ({len(seen)} sequences)")
    else:
        pending.clear()
        return
    raise FloatingPointError(f"NaN/inf gradient while scoring {label!r}, {where}; nothing was written")


def corpus_fingerprint(sequences: list[torch.Tensor]) -> str:
    """SHA-256 of the token ids and lengths: a checkpoint resumes only the job it was written for."""
    h = hashlib.sha256()
    for s in sequences:
        h.update(len(s).to_bytes(8, "little"))
        h.update(s.to(device="cpu", dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def checkpoint_job(criterion: str, label: str, sequences: list[torch.Tensor], model_id: str, dtype, **batching) -> dict:
    """What a checkpoint's sums depend on, which a resume must match: criterion, name, corpus (token ids), model
    (content fingerprint), dtype and how the sequences were batched (`batching`, e.g. batch_size, max_len)."""
    return dict(criterion=criterion, name=label, total=len(sequences), corpus=corpus_fingerprint(sequences),
                model=model_id, dtype=str(dtype).removeprefix("torch."), **batching)


def checkpoint_file(checkpoint_dir) -> Path:
    return Path(checkpoint_dir) / "checkpoint.safetensors"


def save_checkpoint(checkpoint_dir, acc, job: dict, position: int) -> None:
    """Accumulators, job and position in one file, written atomically (a kill leaves the previous one) with the
    SHA-256 of its state and tensors in its own metadata (a damaged one is detected; one file, so no kill can
    separate the checkpoint from its hash)."""
    state = json.dumps({**job, "position": position})
    tensors = {n: a.cpu().contiguous() for n, a in acc.items()}
    digest = _checkpoint_digest(state, tensors.items())
    with atomic_path(checkpoint_file(checkpoint_dir)) as tmp:
        save_file(tensors, str(tmp), metadata={"state": state, "sha256": digest})


def _checkpoint_digest(state: str, tensors) -> str:
    """SHA-256 of a checkpoint's state (JSON text) and its (name, tensor) pairs, in name order."""
    h = hashlib.sha256(state.encode())
    for n, t in sorted(tensors, key=lambda item: item[0]):
        h.update(n.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


OTHER_CHECKPOINT = ("refuse", "restart")  # what a checkpoint of another job does: raise, or discard it and start over


def resume_checkpoint(checkpoint_dir, acc, job: dict, other_checkpoint: str = "refuse") -> int:
    """Load accumulators from a checkpoint of the same job; return the position to continue from.

    The job (checkpoint_job) is what the sums depend on. A checkpoint that is truncated, unreadable or corrupt (its
    SHA-256) is named in a warning, discarded, and scoring starts over (0). One of another job raises
    (other_checkpoint="refuse") or is discarded with a warning naming what differs ("restart"). The tensors are
    read one at a time into `acc` (zeroed again if the hash fails).
    """
    if other_checkpoint not in OTHER_CHECKPOINT:
        raise ValueError(f"other_checkpoint must be one of {OTHER_CHECKPOINT}, got {other_checkpoint!r}")
    if not checkpoint_dir:
        return 0
    path = checkpoint_file(checkpoint_dir)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    if not path.exists():
        return 0
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = json.loads(meta["state"])
            differ = [f"{k}: {_short(state.get(k))} in the checkpoint, {_short(v)} now"
                      for k, v in job.items() if state.get(k) != v]
            if differ and other_checkpoint == "refuse":
                raise _OtherJob(f"checkpoint {path} belongs to another job ({'; '.join(differ)}); "
                                "remove it or use another checkpoint_dir")
            if differ:
                return _discard(path, f"it belongs to another job ({'; '.join(differ)})", job)
            if set(f.keys()) != set(acc):
                raise _OtherJob(f"checkpoint {path} covers other parameters than this model's scope")
            for n, a in acc.items():
                a.copy_(f.get_tensor(n))
        if _checkpoint_digest(meta["state"], acc.items()) != meta["sha256"]:
            raise ValueError("its SHA-256 does not match its contents")
    except _OtherJob as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - whatever makes it unreadable (truncated, flipped bytes), it is discarded
        for a in acc.values():
            a.zero_()
        return _discard(path, f"it is truncated or corrupt ({type(e).__name__}: {e})", job)
    return state["position"]


class _OtherJob(Exception):
    """A readable checkpoint that this job must not resume (raised as ValueError)."""


def _discard(path: Path, why: str, job: dict) -> int:
    """Remove a checkpoint that cannot be resumed, saying why; the position to start from (0)."""
    path.unlink(missing_ok=True)
    warnings.warn(f"checkpoint {path} discarded: {why}; scoring {job['name']!r} from its start", RuntimeWarning,
                  stacklevel=3)
    return 0


def _short(value):
    """A value for an error message: hashes cut to 12 characters."""
    return repr(value[:12] + "…") if isinstance(value, str) and len(value) == 64 else repr(value)


def model_fingerprint(model, sample: int = 1024) -> str:
    """SHA-256 of a model's config and weights, cheap enough for every checkpoint: per parameter its name, dtype,
    shape, float64 sum over all entries and a strided sample of at most `sample` entries (so any two models
    that differ in config, in a tensor or in a systematic change of one entry get different fingerprints). Of a
    sharded (DTensor) parameter, only this process's shard is read."""
    config = model.config.to_dict() if hasattr(model, "config") else {}
    for volatile in ("_name_or_path", "torch_dtype", "dtype", "use_cache", "transformers_version"):
        config.pop(volatile, None)
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda item: clean_name(item[0])):
            flat = (p.to_local() if hasattr(p, "to_local") else p).detach().reshape(-1)
            picked = flat[:: max(1, flat.numel() // sample)][:sample].float().cpu()
            total = torch.sum(flat, dtype=torch.float64).item() if flat.numel() else 0.0
            h.update(f"{clean_name(name)}|{p.dtype}|{tuple(p.shape)}|{total!r}|".encode())
            h.update(picked.numpy().tobytes())
    return h.hexdigest()
