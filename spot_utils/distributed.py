"""Data-parallel scoring with torch.distributed: each rank scores a shard, accumulators are all-reduced.

    torchrun --nproc-per-node 8 -m spot_utils.distributed params/llama-3.1-8b.yaml

NCCL on GPUs (rank r uses cuda:LOCAL_RANK), gloo on CPU. Every rank holds the whole model; the sums are
added across ranks, so the result equals one process scoring everything (up to float summation order).
Rank 0 writes runs/<run>/scores/<lang>.safetensors, as the 01_scoring notebook does.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist

from .scoring import CRITERIA, accumulate, finalize


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


def score_distributed(model, sequences, criterion: str = "grad_x_weight", batch_size: int = 8, include=None,
                      name: str | None = None, checkpoint_dir=None, checkpoint_every: int | None = None,
                      **kwargs) -> dict:
    """`spot_utils.score` over all ranks of the initialised process group; every rank gets the full scores.

    Each rank scores shard(sequences, rank, world) (checkpointed under checkpoint_dir/rank<r>of<w>), then the
    fp32 accumulators are summed with all_reduce. An error on any rank (e.g. NaN) is raised on every rank,
    so none waits forever in the collective. Same arguments as `score`.
    """
    sequences = list(sequences)
    summed = CRITERIA.pick(criterion).fold is not None  # a criterion without fold reads only the weights
    if not sequences and summed:
        raise ValueError(f"empty corpus for {name or 'corpus'!r}: nothing to score")
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = shard(sequences, rank, world)
    ckpt = None if checkpoint_dir is None else os.path.join(checkpoint_dir, f"rank{rank}of{world}")
    error = None
    try:
        params, acc = accumulate(model, mine, criterion, batch_size, include, name, ckpt, checkpoint_every,
                                 allow_empty=True, sequence_ids=shard(range(len(sequences)), rank, world), **kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised below, after telling the other ranks
        error = e
    device = next(model.parameters()).device
    failed = torch.tensor([0 if error is None else 1], device=device)
    dist.all_reduce(failed)
    if error is not None:
        raise error
    if failed.item():
        raise RuntimeError(f"scoring {name or 'corpus'!r} failed on another rank; see its error")
    if summed:
        for a in acc.values():
            dist.all_reduce(a)
    return finalize(params, acc, criterion)


def main(argv=None) -> None:
    """Score every language of a params file data-parallel; rank 0 writes the score files."""
    from . import stage  # imported here: it needs the corpus module, which workers of score_distributed do not
    from .io import write_json
    from .models import load_model
    from .params import load_params, resolve_model
    from .runs import run_dir, save_tensors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="a params YAML file, e.g. params/llama-3.1-8b.yaml")
    args = parser.parse_args(argv)
    P = load_params(args.params)
    device = init(P["device"])
    rank = dist.get_rank()
    torch.manual_seed(P["seed"])
    model, tokenizer = load_model(resolve_model(P["model"]), dtype=P["dtype"], device=str(device))
    langs = P["languages"] + [P["general_language"]]
    if rank == 0:  # build the corpora once, then every rank reads the same deterministic sequences
        stage.sequences(P, tokenizer, langs, "score", P["n_score_sequences"], P["max_len"])
    dist.barrier()
    seqs = stage.sequences(P, tokenizer, langs, "score", P["n_score_sequences"], P["max_len"])
    timing = []
    for lang, lang_seqs in seqs.items():
        start = time.perf_counter()
        scores = score_distributed(model, lang_seqs, criterion=P["criterion"], batch_size=P["batch_size"],
                                   include=P["score_include"], name=lang,
                                   checkpoint_dir=run_dir(P) / "checkpoints" / lang,
                                   checkpoint_every=P["checkpoint_every"], max_len=P["max_len"],
                                   overlong=P["overlong"])
        seconds = time.perf_counter() - start
        if rank == 0:
            save_tensors(run_dir(P) / "scores" / f"{lang}.safetensors", scores,
                         dict(language=lang, criterion=P["criterion"], model=P["model"], sequences=len(lang_seqs)))
            timing.append(dict(language=lang, sequences=len(lang_seqs), tokens=sum(map(len, lang_seqs)),
                               seconds=round(seconds, 1), world_size=dist.get_world_size(),
                               per_sequence=CRITERIA[P["criterion"]].per_sequence))
            print(f"{lang}: {timing[-1]}", flush=True)
        dist.barrier()
    if rank == 0:
        write_json(run_dir(P) / "01_scoring_distributed.json", dict(device=str(device), scored=timing))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
