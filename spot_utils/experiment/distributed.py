"""Scoring over several processes with torch.distributed: each rank scores a shard of the sequences.

    torchrun --nproc-per-node 8 -m spot_utils.distributed params/llama-3.1-8b.yaml [--strategy ddp|fsdp]

NCCL on GPUs (rank r uses cuda:LOCAL_RANK), gloo on CPU. Two strategies (docs/SCALING.md):
- ddp: every rank holds the whole model and a whole fp32 accumulator; the accumulators are summed with all_reduce.
- fsdp: the model is sharded over the ranks with torch's fully_shard (FSDP2), built on the meta device and filled
  from rank 0's one host copy (load_sharded); the fp32 accumulators are sharded like the parameters, and FSDP's
  reduce-scatter sums the ranks' gradients into them (grad_x_weight only).
Either way the result equals one process scoring everything (up to float summation order), through the same
gradient loop as `score` (scoring.folding_gradients, backward_batch). The languages are scored by the same loop
as the 01_scoring notebook (scoring_stage.score_languages), which rank 0 uses to write the same
files: scores, half scores, and a resumable run.
"""
from __future__ import annotations

import argparse
from functools import partial
import hashlib
import math
import os

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM

from . import stage
from ..base.io import write_json
from ..base.run_files import stage_record_path
from ..data.models import load_model, resolve_dtype
from ..method.scoring import (CRITERIA, accumulate, backward_batch, cap_with_origin, checked_sequences,
                              checkpoint_file, checkpoint_job, decoder_layers_prefix, finalize, folding_gradients,
                              model_fingerprint, resume_checkpoint, save_checkpoint, scoped_parameters)
from .params import load_params, resolve_model
from .scoring_stage import score_languages

STRATEGIES = ("ddp", "fsdp")


def init(device: str | None = None) -> torch.device:
    """Join the process group torchrun describes (env://) and return this rank's device."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return torch.device(device)


def shard(sequences: list, rank: int, world: int) -> list:
    """Rank's share of the sequences: every world-th one, starting at rank (balanced lengths on average)."""
    return list(sequences)[rank::world]


def _fail_together(error: Exception | None, device, name) -> None:
    """Raise `error` on its rank and a RuntimeError on every other one (so that none waits in a collective)."""
    failed = torch.tensor([0 if error is None else 1], device=device)
    dist.all_reduce(failed)
    if error is not None:
        raise error
    if failed.item():
        raise RuntimeError(f"scoring {name or 'corpus'!r} failed on another rank; see its error")


def score_distributed(model, sequences, criterion: str = "grad_x_weight", batch_size: int = 8, include=None,
                      name: str | None = None, checkpoint_dir=None, checkpoint_every: int | None = None,
                      everywhere: bool = True, **kwargs) -> dict | None:
    """`spot_utils.score` over all ranks of the initialised process group (data-parallel: every rank holds the
    model); every rank gets the full scores, or with everywhere=False only rank 0 (the others None: one host
    copy of the scores per node instead of one per GPU).

    Each rank scores shard(sequences, rank, world) (checkpointed under checkpoint_dir/rank<r>of<w>), then the
    fp32 accumulators are summed with all_reduce (reduce to rank 0). An error on any rank (e.g. NaN) is raised
    on every rank, so none waits forever in the collective. Same arguments as `score`.
    """
    sequences = list(sequences)
    summed = CRITERIA.pick(criterion).fold is not None  # a criterion without fold reads only the weights
    if not sequences and summed:
        raise ValueError(f"empty corpus for {name or 'corpus'!r}: nothing to score")
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = shard(sequences, rank, world)
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"rank{rank}of{world}")
    error = params = acc = None
    try:
        params, acc = accumulate(model, mine, criterion, batch_size, include, name, ckpt, checkpoint_every,
                                 allow_empty=True, sequence_ids=shard(range(len(sequences)), rank, world), **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
        error = e
    _fail_together(error, next(model.parameters()).device, name)
    if CRITERIA.pick(criterion).fold is not None:  # a criterion without fold reads only the weights
        for a in acc.values():
            dist.all_reduce(a) if everywhere else dist.reduce(a, dst=0)
    return finalize(params, acc, criterion) if everywhere or rank == 0 else None


def shard_model(model, device: torch.device):
    """Shard `model` (on any device, e.g. the host) over the process group with fully_shard onto `device`: every
    decoder layer, then the rest; gradients are summed over ranks (FSDP averages by default; scores need the
    sum). Returns the model (changed in place)."""
    from torch.distributed.device_mesh import init_device_mesh  # deferred: FSDP, only for the fsdp strategy
    from torch.distributed.fsdp import FSDPModule, fully_shard  # deferred: FSDP, only for the fsdp strategy
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for layer in model.get_submodule(decoder_layers_prefix(model)[:-1]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # a plain SUM: gloo has no pre-multiplied sum
    return model


def load_sharded(spec: str, dtype: str, device: torch.device):
    """(model sharded by shard_model onto `device`, tokenizer) with one full host copy of the weights per process
    group, not one per rank: rank 0 loads the model on the host; every rank builds it on the meta device from rank
    0's config, shards it and receives its shards of rank 0's weights (set_model_state_dict, broadcast_from_rank0),
    and rank 0's buffers (e.g. rotary frequencies, which a meta build leaves empty)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict  # deferred: FSDP only
    rank = dist.get_rank()
    full, tokenizer = load_model(spec, dtype=dtype, device="cpu") if rank == 0 else (None, None)
    shared = [full.config if rank == 0 else None, tokenizer]
    dist.broadcast_object_list(shared, src=0, device=device if device.type == "cuda" else None)
    config, tokenizer = shared
    if getattr(config, "quantization_config", None) is not None:  # a GGUF's: its weights are already dequantised
        del config.quantization_config
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    model.config.use_cache = False
    shard_model(model.eval(), device)
    model.to_empty(device=device)
    set_model_state_dict(model, full.state_dict() if rank == 0 else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if rank == 0:
                buffer.copy_(full.get_buffer(name))
            dist.broadcast(buffer, src=0)
    del full
    return model, tokenizer


def score_sharded(model, sequences, criterion: str = "grad_x_weight", batch_size: int = 8, include=None,
                  name: str | None = None, checkpoint_dir=None, checkpoint_every: int | None = None, *,
                  max_len: int | None = None, overlong: str = "chunk", info: dict | None = None,
                  other_checkpoint: str = "refuse") -> dict | None:
    """`spot_utils.score` of a model sharded by shard_model; rank 0 gets the full scores, other ranks None.

    The (capped) sequences are dealt out as in score_distributed; every rank runs the same number of steps,
    since each step's forward and backward are collectives (a rank whose shard has run out runs a sequence with
    weight 0). FSDP's reduce-scatter adds the ranks' gradients of a step, and each rank folds its shard of that
    sum into its shard of the fp32 accumulator (a post-accumulate-grad hook on the sharded parameter). A NaN/inf
    loss stops every rank at that step, naming the sequence. Checkpoints: each rank's accumulator shard and the
    step, under checkpoint_dir/fsdp_rank<r>of<w>, with the job as in `score` (the model's fingerprint taken over all
    ranks' shards, so every rank refuses a checkpoint of another model alike). The per-sequence criteria need each sequence's own gradient,
    which the reduce-scatter has already summed over ranks: they are refused (use score_distributed).
    """
    crit = CRITERIA.pick(criterion)
    if crit.per_sequence:
        raise ValueError(f"criterion {criterion!r} needs each sequence's own gradient, which FSDP sums over ranks "
                         "before any rank sees it: use the ddp strategy")
    label = name or "corpus"
    rank, world = dist.get_rank(), dist.get_world_size()
    params = scoped_parameters(model, include)
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}  # sharded like each parameter
    if crit.fold is None:  # reads only the weights
        for n, p in params.items():
            crit.finalize(acc[n], p)
        return _gather(acc, rank)
    sequences = checked_sequences(sequences, model.get_input_embeddings().weight.shape[0], label)
    capped, origin, n_over = cap_with_origin(sequences, max_len, overlong)
    if not capped:
        raise ValueError(f"empty corpus for {label!r}: nothing to score")
    mine = shard(range(len(capped)), rank, world)
    steps = math.ceil(math.ceil(len(capped) / world) / batch_size)  # rank 0's shard is the largest
    device = next(iter(params.values())).device
    local = {n: a.to_local() for n, a in acc.items()}
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"fsdp_rank{rank}of{world}")
    job = ckpt and checkpoint_job(criterion, label, capped, sharded_fingerprint(model, device),
                                  next(iter(params.values())).dtype, strategy="fsdp", world=world, steps=steps)
    start = resume_checkpoint(ckpt, local, job, other_checkpoint)
    every = max(1, (checkpoint_every or 0) // (batch_size * world))  # steps between checkpoints
    try:
        with folding_gradients(model, params, acc, crit.fold):  # this rank's shard of the gradient summed over ranks
            for step in range(start, steps):
                ids = mine[step * batch_size: (step + 1) * batch_size]
                loss = backward_batch(model, [capped[i] for i in ids] or capped[:1], device, 1.0 if ids else 0.0)
                bad = (~torch.isfinite(loss)).nonzero().flatten().tolist() if ids else []
                first = torch.tensor([origin[ids[bad[0]]] if bad else len(sequences)], device=device)
                dist.all_reduce(first, op=dist.ReduceOp.MIN)
                if int(first) < len(sequences):
                    raise FloatingPointError(f"NaN/inf gradient while scoring {label!r}, sequence {int(first)}; "
                                             "nothing was written")
                done = step + 1
                if ckpt and checkpoint_every and done < steps and done % every == 0:
                    _check_finite_sharded(local, label, device)
                    save_checkpoint(ckpt, local, job, done)
    except BaseException:  # FSDP's recovery after a step cut short: parameters resharded, the step's state dropped
        if hasattr(model, "reset_iter_state"):  # torch >= 2.13
            model.reset_iter_state()
        raise
    _check_finite_sharded(local, label, device)
    if info is not None:
        info.update(sequences=len(capped), tokens=sum(len(s) for s in capped), overlong=n_over, batch_size=batch_size,
                    overlong_policy=overlong if max_len else None, max_len=max_len, resumed_from=start * batch_size * world)
    if ckpt:
        checkpoint_file(ckpt).unlink(missing_ok=True)
    if crit.finalize is not None:
        for n, a in acc.items():
            crit.finalize(a, params[n])  # e.g. θ ⊙ Σ∇L, shard by shard
    return _gather(acc, rank)


def sharded_fingerprint(model, device) -> str:
    """scoring.model_fingerprint of every rank's parameter shards, combined in rank order: the same on every rank,
    and different when the config or any rank's shard differs."""
    digest = torch.tensor(list(bytes.fromhex(model_fingerprint(model))), dtype=torch.uint8, device=device)
    parts = [torch.empty_like(digest) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, digest)
    return hashlib.sha256(b"".join(bytes(p.cpu().tolist()) for p in parts)).hexdigest()


def _check_finite_sharded(local: dict, label: str, device) -> None:
    """Raise on every rank when any rank's accumulator shard holds NaN/inf (a non-finite gradient)."""
    bad = torch.tensor([int(not all(torch.isfinite(a).all() for a in local.values()))], device=device)
    dist.all_reduce(bad)
    if bad.item():
        raise FloatingPointError(f"NaN/inf gradient while scoring {label!r} (loss finite); nothing was written")


def _gather(acc: dict, rank: int) -> dict | None:
    """Full float32 CPU tensors on rank 0 (gathered one tensor at a time), None elsewhere."""
    out = {}
    for n, a in acc.items():
        full = a.full_tensor()
        if rank == 0:
            out[n] = full.cpu()
        del full
    return out if rank == 0 else None


def main(argv=None) -> None:
    """Score every language of a params file over the ranks; rank 0 writes the files the 01_scoring stage writes."""

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="a params YAML file, e.g. params/llama-3.1-8b.yaml")
    parser.add_argument("--strategy", choices=STRATEGIES, default="ddp",
                        help="ddp: the whole model on every rank; fsdp: the model sharded over the ranks")
    args = parser.parse_args(argv)
    P = load_params(args.params)
    device = init(P["device"])
    rank = dist.get_rank()
    torch.manual_seed(P["seed"])
    if args.strategy == "fsdp":  # one host copy (rank 0's), each rank's shards on its device
        model, tokenizer = load_sharded(resolve_model(P["model"]), P["dtype"], device)
        scorer, model_id = score_sharded, sharded_fingerprint(model, device)
    else:
        model, tokenizer = load_model(resolve_model(P["model"]), dtype=P["dtype"], device=str(device))
        scorer, model_id = partial(score_distributed, everywhere=False), model_fingerprint(model)
    langs = P["languages"] + [P["general_language"]]
    if rank == 0:  # build the corpora once, then every rank reads the same deterministic sequences
        stage.sequences(P, tokenizer, langs, "score", P["n_score_sequences"], P["max_len"])
    dist.barrier()
    seqs = stage.sequences(P, tokenizer, langs, "score", P["n_score_sequences"], P["max_len"])

    def agree(flag: bool) -> bool:
        decision = torch.tensor([int(flag)], device=device)
        dist.broadcast(decision, src=0)
        return bool(decision.item())

    timing = score_languages(P, model, seqs, scorer=scorer, writer=rank == 0, agree=agree,
                             log=print if rank == 0 else (lambda *a: None), model_id=model_id)
    dist.barrier()
    if rank == 0:
        write_json(stage_record_path(P, "01_scoring_distributed"),
                   dict(device=str(device), strategy=args.strategy, world_size=dist.get_world_size(), scored=timing))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
