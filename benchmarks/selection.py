"""Exact global top-k over ≥ 1e9 memory-mapped scores: time and peak memory, extrapolated to an 8B model.

    python benchmarks/selection.py [--layers 5] [--k 1 0.001] [--dir /tmp/spot_bench]

Scores are float32 files on disk (one per tensor, Llama-3.1-8B decoder-layer shapes), opened with np.memmap, so
they live in the page cache, not in the process's anonymous memory. Peak anonymous memory (RssAnon, sampled every
2 ms) is what selection itself allocates: the output masks (1 byte per entry as torch.bool) plus the working set
(chunk buffers, the sample, the keys inside the bracket). No second full-size copy of the scores is ever made.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch

from spot_utils import select_top_k
from spot_utils.method.selection import _CHUNK

LAYER = {  # Llama-3.1-8B: hidden 4096, 32 query heads / 8 kv heads of 128, MLP 14336
    "self_attn.q_proj.weight": (4096, 4096), "self_attn.k_proj.weight": (1024, 4096),
    "self_attn.v_proj.weight": (1024, 4096), "self_attn.o_proj.weight": (4096, 4096),
    "mlp.gate_proj.weight": (14336, 4096), "mlp.up_proj.weight": (14336, 4096), "mlp.down_proj.weight": (4096, 14336),
    "input_layernorm.weight": (4096,), "post_attention_layernorm.weight": (4096,),
}
LLAMA_8B_LAYERS = 32


def rss_anon() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakSampler:
    """Peak RssAnon over a block, sampled by a background thread."""

    def __enter__(self):
        self.peak, self._stop = rss_anon(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_anon())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def write_scores(folder: Path, layers: int, seed: int = 0) -> dict[str, tuple]:
    """Write float32 score files (|N(0,1)| quantised to 2^-12, so there are many ties) and return their shapes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shapes = {}
    for i in range(layers):
        for name, shape in LAYER.items():
            full = f"model.layers.{i}.{name}"
            mm = np.lib.format.open_memmap(folder / f"{full}.npy", mode="w+", dtype=np.float32, shape=shape)
            flat = mm.reshape(-1)
            for lo in range(0, flat.size, _CHUNK):
                x = rng.standard_normal(min(_CHUNK, flat.size - lo), dtype=np.float32)
                flat[lo: lo + len(x)] = np.round(np.abs(x) * 4096) / 4096
            mm.flush()
            del mm
            shapes[full] = shape
    return shapes


def open_scores(folder: Path, names) -> dict[str, torch.Tensor]:
    """Memory-mapped, copy-on-write views (never written): no data is read until selection touches it."""
    return {n: torch.from_numpy(np.load(folder / f"{n}.npy", mmap_mode="c")) for n in names}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=5, help="Llama-8B decoder layers to simulate (5 ≈ 1.09e9 entries)")
    ap.add_argument("--k", type=float, nargs="+", default=[1.0, 0.001], help="k in percent")
    ap.add_argument("--dir", default="/tmp/spot_selection_bench")
    ap.add_argument("--keep", action="store_true", help="keep the score files")
    args = ap.parse_args()
    folder = Path(args.dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    shapes = write_scores(folder, args.layers)
    n = sum(int(np.prod(s)) for s in shapes.values())
    print(f"wrote {len(shapes)} score files, {n:,} entries ({n * 4 / 2**30:.2f} GiB float32) in {time.perf_counter() - t0:.0f} s")
    per_layer = sum(int(np.prod(s)) for s in LAYER.values())
    n8b = per_layer * LLAMA_8B_LAYERS
    try:
        for k in args.k:
            scores = open_scores(folder, shapes)
            base = rss_anon()
            with PeakSampler() as peak:
                t = time.perf_counter()
                masks = select_top_k(scores, k, "global")
                seconds = time.perf_counter() - t
            selected = sum(int(m.sum()) for m in masks.values())
            assert selected == int(k / 100 * n), (selected, k, n)
            extra = peak.peak - base
            print(f"k = {k}%: {selected:,} selected of {n:,} in {seconds:.1f} s ({n / seconds / 1e6:.0f} M entries/s); "
                  f"peak extra anonymous memory {extra / 2**30:.2f} GiB, of which the output masks (torch.bool) are "
                  f"{n / 2**30:.2f} GiB; the scores ({n * 4 / 2**30:.2f} GiB) stay memory-mapped and are never copied")
            print(f"  extrapolated to Llama-3.1-8B decoder layers ({n8b:,} entries; time linear in N): ≈ {seconds * n8b / n:.0f} s; "
                  f"masks {n8b / 2**30:.1f} GiB as torch.bool ({n8b / 8 / 2**30:.2f} GiB bit-packed on disk) plus a working "
                  f"set bounded by the largest tensor and the chunk size ({max(extra - n, 0) / 2**20:.0f} MiB measured here)")
            del masks, scores
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
