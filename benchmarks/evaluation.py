"""Evaluation cost of the two batching choices in `item_losses`, measured in one run (prints a table, writes JSON).

    python benchmarks/evaluation.py --model random:llama
    SPOT_DATA_DIR=/work/main/data python benchmarks/evaluation.py --model gemma3-270m
    python benchmarks/evaluation.py --model random-8b --dtype bfloat16 --device cuda   # Llama-3.1-8B shape, random

1. loss evaluation: `--subsets` subsets of `--per-subset` sequences of `--seq-len` tokens (the default run's shape:
   14 x 2 x 128), one subset at a time (batches never mix subsets) vs one call whose batches cross subsets.
2. reference-solution likelihood: `--items` sequences of `--context` + `--solution` tokens, the loss counted on the
   solution only, with every position projected to the vocabulary vs only the positions from the batch's first
   solution token on (`logits_to_keep`).
Both: interleaved repetitions, median seconds, their ratio, and the largest difference of the per-item losses.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import contextmanager

import torch

from scoring import build, sync  # benchmarks/scoring.py: random real-model shapes and device sync

from spot_utils.method import losses  # noqa: E402  (scoring puts the repository on sys.path)
from spot_utils.measure.evaluation import item_losses  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402


@contextmanager
def every_position_projected():
    """sequence_losses as if the model's forward had no `logits_to_keep`."""
    keeps = losses._keeps_logits
    losses._keeps_logits = lambda model_class: False
    try:
        yield
    finally:
        losses._keeps_logits = keeps


def item_loss_tensor(model, subsets, batch, context_lengths=None) -> torch.Tensor:
    """item_losses' per-item losses, in subset order."""
    return torch.tensor(item_losses(model, subsets, batch, context_lengths=context_lengths).loss.to_numpy())


def per_subset(model, subsets, batch):
    return torch.cat([item_loss_tensor(model, {s: seqs}, batch) for s, seqs in subsets.items()])


def likelihood_all_positions(model, seqs, context, batch):
    with every_position_projected():
        return item_loss_tensor(model, {"x": seqs}, batch, {"x": context})


def compare(name, a, b, reps, device) -> dict:
    """Median seconds of a() and b() over interleaved repetitions (after one warm-up each), and their results."""
    times = {"a": [], "b": []}
    out = {"a": a(), "b": b()}
    for _ in range(reps):
        for key, fn in (("a", a), ("b", b)):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - start)
    ta, tb = statistics.median(times["a"]), statistics.median(times["b"])
    diff = float((out["a"] - out["b"]).abs().max())
    return dict(case=name, before_s=round(ta, 4), after_s=round(tb, 4), speed_up=round(ta / tb, 2),
                max_loss_difference=diff, max_loss=float(out["a"].abs().max()), reps=reps)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:llama", help="a load_model spec, or random-8b / random-135m")
    ap.add_argument("--layers", type=int, default=None, help="random-8b / random-135m only: fewer decoder layers")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--subsets", type=int, default=14)
    ap.add_argument("--per-subset", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--items", type=int, default=32)
    ap.add_argument("--context", type=int, default=192)
    ap.add_argument("--solution", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args()
    model, vocab = build(args)
    gen = torch.Generator().manual_seed(0)
    subsets = {f"s{i}": [torch.randint(0, vocab, (args.seq_len,), generator=gen) for _ in range(args.per_subset)]
               for i in range(args.subsets)}
    # likelihood items: contexts and solutions of varying length around the given means
    lengths = [(int(args.context * f), int(args.solution * f)) for f in torch.linspace(0.5, 1.5, args.items).tolist()]
    seqs = [torch.randint(0, vocab, (c + s,), generator=gen) for c, s in lengths]
    context = [c for c, _ in lengths]
    with torch.no_grad():
        rows = [compare("loss: one subset at a time -> batches across subsets",
                        lambda: per_subset(model, subsets, args.batch),
                        lambda: item_loss_tensor(model, subsets, args.batch), args.reps, args.device),
                compare("likelihood: every position projected -> from the first solution token (logits_to_keep)",
                        lambda: likelihood_all_positions(model, seqs, context, args.batch),
                        lambda: item_loss_tensor(model, {"x": seqs}, args.batch, {"x": context}), args.reps,
                        args.device)]
    setup = dict(model=args.model, dtype=args.dtype, device=args.device, vocab=vocab, batch=args.batch,
                 loss_shape=[args.subsets, args.per_subset, args.seq_len],
                 likelihood_shape=[args.items, args.context, args.solution], torch=torch.__version__,
                 gpu=torch.cuda.get_device_name() if str(args.device).startswith("cuda") else None,
                 threads=torch.get_num_threads())
    print(json.dumps(setup))
    for r in rows:
        print(f"{r['case']}: {r['before_s']:.3f} s -> {r['after_s']:.3f} s, {r['speed_up']:.2f}x; "
              f"largest loss difference {r['max_loss_difference']:.2e} (losses up to {r['max_loss']:.2f})")
    if args.out:
        write_json(args.out, dict(setup=setup, results=rows))


if __name__ == "__main__":
    main()
