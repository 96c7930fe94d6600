"""FSDP scoring in one process (NCCL on CUDA, gloo on CPU) against `spot_utils.score` on the same model: the path
`python -m spot_utils.distributed --strategy fsdp` takes (load_sharded: built on the meta device, filled from one
host copy; score_sharded), on a random model with Llama-3.1-8B's shapes but few decoder layers. Exits 1 when the
scores differ beyond the dtype's tolerance.

    python benchmarks/fsdp_check.py --device cuda --out benchmarks/results/fsdp_nccl_<gpu>.json
    PYTHONPATH=. python benchmarks/fsdp_check.py --device cpu --small --layers 1     # gloo, a CPU-sized model
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from gpu_end_to_end import SMALL, save_model  # noqa: E402
from scoring import LLAMA31_8B  # noqa: E402
from spot_utils import load_model, score  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.experiment.distributed import init, load_sharded, score_sharded  # noqa: E402

TOLERANCE = {"float32": dict(rtol=1e-4, atol=1e-6), "bfloat16": dict(rtol=5e-2, atol=1e-3)}  # atol × max |score|


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (NCCL) or cpu (gloo)")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(TOLERANCE))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--small", action="store_true", help="CPU scale: small hidden size and vocabulary")
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--out", default=None, help="JSON file for the result")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 260, (args.seq_len,), generator=gen) for _ in range(args.sequences)]  # byte tokenizer
    with tempfile.TemporaryDirectory(prefix="spot-fsdp-") as tmp:
        folder = Path(tmp) / "model"
        sizes = save_model(folder, {**LLAMA31_8B, **(SMALL if args.small else {})}, args.layers, args.dtype)
        model, _ = load_model(str(folder), dtype=args.dtype, device=args.device)
        single = score(model, seqs, batch_size=2)
        del model
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        device = init(args.device)
        try:
            model, _ = load_sharded(str(folder), args.dtype, device)
            start = time.perf_counter()
            sharded = score_sharded(model, seqs, batch_size=2)
            seconds = time.perf_counter() - start
            backend = dist.get_backend()
        finally:
            dist.destroy_process_group()
    scale = max(t.abs().max().item() for t in single.values())
    tol = TOLERANCE[args.dtype]
    diff = max((sharded[n] - single[n]).abs().max().item() for n in single)
    close = set(sharded) == set(single) and all(
        torch.allclose(sharded[n], single[n], rtol=tol["rtol"], atol=tol["atol"] * scale) for n in single)
    result = dict(command="python " + " ".join(["benchmarks/fsdp_check.py"] + (argv or sys.argv[1:])),
                  backend=backend, world_size=1, device=args.device, dtype=args.dtype, model=sizes,
                  sequences=args.sequences, seq_len=args.seq_len, score_sharded_seconds=round(seconds, 2),
                  max_abs_diff=diff, max_abs_score=scale, tolerance=tol, equal_within_tolerance=close,
                  torch=torch.__version__, cuda=torch.version.cuda,
                  device_name=torch.cuda.get_device_name() if args.device.startswith("cuda") else None)
    print(f"fsdp ({backend}, 1 process) vs score: max |diff| {diff:.2e} (max |score| {scale:.2e}); "
          f"{'equal' if close else 'NOT equal'} within rtol {tol['rtol']}, atol {tol['atol']} × max |score|")
    if args.out:
        write_json(args.out, result)
    return 0 if close else 1


if __name__ == "__main__":
    sys.exit(main())
