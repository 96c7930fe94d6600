"""Optimizer memory and step time of sparse AdamW (spot_utils.method.tuning.SparseAdamW) against dense masked
training (torch.optim.AdamW over every parameter with a selected entry, its gradient multiplied by the mask after
backward) at k = 0.1%, 1% and 5% of the decoder layers' entries (a random_uniform mask: where the entries lie does
not change either cost).

    SPOT_DATA_DIR=/work/main/data PYTHONPATH=. python benchmarks/sparse_tuning.py --model smollm2-135m \
        | tee benchmarks/results/sparse_tuning_smollm2-135m_cpu.txt
    PYTHONPATH=. python benchmarks/sparse_tuning.py --tiny     # random:llama, one step: checks that it runs

Printed per k: the selected entries, the optimizer state in bytes (sparse: indices and two moments of the selected
entries; dense: torch's state tensors), the median time of a whole training step (forward, backward, optimizer) and
of the optimizer's part alone, and the ratios sparse / dense. Both arms train without weight decay (dense AdamW would
decay the unselected entries too) from the same weights on the same batches.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spot_utils.data.models import load_model  # noqa: E402
from spot_utils.method.ablation import random_uniform_of  # noqa: E402
from spot_utils.method.losses import pad_batch, sequence_losses  # noqa: E402
from spot_utils.method.scoring import clean_name  # noqa: E402
from spot_utils.method.tuning import SparseAdamW, sparse_parameters  # noqa: E402

K_PERCENT = (0.1, 1.0, 5.0)


def masks_at(model, k_percent: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """k% of the decoder layers' entries, drawn uniformly over them."""
    shapes = {clean_name(n): tuple(p.shape) for n, p in model.named_parameters() if ".layers." in n}
    total = round(sum(torch.Size(s).numel() for s in shapes.values()) * k_percent / 100)
    return random_uniform_of(max(1, total), seed, shapes)


def dense_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(t.nbytes for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t))


def time_steps(model, optimizer, batches, masks=None) -> tuple[list[float], list[float]]:
    """Seconds of each whole training step and of its optimizer part; `masks`: multiply gradients by them first."""
    params = dict((clean_name(n), p) for n, p in model.named_parameters() if p.requires_grad)
    whole, opt = [], []
    for batch in batches:
        start = time.perf_counter()
        ids, attention = pad_batch(batch)
        sequence_losses(model, ids, attention, count_correct=False)[0].mean().backward()
        middle = time.perf_counter()
        if masks is not None:
            with torch.no_grad():
                for n, p in params.items():
                    p.grad.mul_(masks[n])
        optimizer.step()
        optimizer.zero_grad()
        end = time.perf_counter()
        whole.append(end - start)
        opt.append(end - middle)
    return whole, opt


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per arm (after one untimed warm-up)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tiny", action="store_true", help="random:llama, one timed step")
    args = parser.parse_args(argv)
    if args.tiny:
        args.model, args.steps = "random:llama", 1
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    batches = [[torch.randint(0, len(tokenizer), (args.seq_len,), generator=gen) for _ in range(args.batch)]
               for _ in range(args.steps + 1)]
    print(f"model {args.model}; batch {args.batch} × {args.seq_len} tokens; {args.steps} timed steps per arm; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}")
    print("k%   selected     sparse state B   dense state B   state ratio   step s sparse/dense (ratio)   "
          "optimizer s sparse/dense (ratio)")
    for k in K_PERCENT:
        masks = masks_at(model, k)
        results = {}
        for arm in ("sparse", "dense"):
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(start[n])
            params = sparse_parameters(model, masks)
            if arm == "sparse":
                optimizer = SparseAdamW(params, masks, lr=1e-4)
            else:
                optimizer = torch.optim.AdamW(params.values(), lr=1e-4, weight_decay=0.0)
            used = {n: masks[n] for n in params}
            time_steps(model, optimizer, batches[:1], None if arm == "sparse" else used)  # warm-up; creates state
            whole, opt = time_steps(model, optimizer, batches[1:], None if arm == "sparse" else used)
            state = optimizer.state_bytes() if arm == "sparse" else dense_state_bytes(optimizer)
            results[arm] = (state, statistics.median(whole), statistics.median(opt))
            selected = sum(int(m.sum()) for m in used.values())
            del optimizer
        (s_state, s_step, s_opt), (d_state, d_step, d_opt) = results["sparse"], results["dense"]
        print(f"{k:<4g} {selected:>11,} {s_state:>16,} {d_state:>15,} {s_state / d_state:>13.4f}   "
              f"{s_step:.3f} / {d_step:.3f} ({s_step / d_step:.2f})             "
              f"{s_opt:.4f} / {d_opt:.4f} ({s_opt / d_opt:.2f})")


if __name__ == "__main__":
    main()
