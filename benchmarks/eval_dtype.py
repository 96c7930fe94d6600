"""Evaluating in bfloat16 instead of float32: loss differences, speed, and whether masks keep their order.

    SPOT_DATA_DIR=/work/main/data PYTHONPATH=. python benchmarks/eval_dtype.py
    SPOT_DATA_DIR=/work/main/data PYTHONPATH=. python benchmarks/eval_dtype.py --items 4 --threads 2

On the same held-out windows (`--items` per subset of `--seq-len` tokens, eval split) and the same model
(`--model`, loaded once per dtype with spot_utils.load_model):
1. baseline loss per subset in float32 and bfloat16, and their relative difference (the bar: within 1%);
2. seconds per evaluation of all subsets, median of interleaved repetitions, and their ratio;
3. a few masks — a spot (global top-k of grad_x_weight on `--score-items` score-split windows per code
   language, scored once in float32), magnitude (global top-k |θ|) and random_uniform with two seeds, at each
   k of `--k` — ablated in each dtype: the mean loss over all items, and whether sorting the masks by it gives
   the same order in both dtypes (over all items and per subset); and each mask's rise (ablated / baseline
   − 1) per subset in both dtypes, with the largest difference.
Writes JSON (default benchmarks/results/eval_dtype_<model>_cpu.json) and prints a summary.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spot_utils import load_model, score, scoped_parameters  # noqa: E402
from spot_utils.method.ablation import ablated, random_uniform  # noqa: E402
from spot_utils.data.corpus import load_sequences  # noqa: E402
from spot_utils.measure.evaluation import item_losses  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.method.selection import select_top_k  # noqa: E402


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = ("avx512_bf16", "amx_bf16", "avx512f", "avx2")
    return [f for f in wanted if f" {f}" in text]


def losses(model, subsets, batch) -> dict[str, list[float]]:
    df = item_losses(model, subsets, batch)
    return {s: g.loss.tolist() for s, g in df.groupby("subset", sort=False)}


def mean(values) -> float:
    return float(sum(values) / len(values))


def order(values: dict[str, float]) -> list[str]:
    return sorted(values, key=values.get)


def rises(result: dict) -> dict:
    """Per mask and subset, the rise (ablated / baseline − 1) in each dtype and bfloat16's minus float32's."""
    out = {}
    for name, per in result["masks"].items():
        out[name] = {}
        for s in result["subsets"]:
            r = {dt: per[dt][s] / result["baseline"][s][dt] - 1 for dt in ("float32", "bfloat16")}
            out[name][s] = {**r, "difference": r["bfloat16"] - r["float32"]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--code", nargs="+", default=["python", "go", "rust"])
    ap.add_argument("--general", nargs="+", default=["english", "english_doc"])
    ap.add_argument("--items", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--score-items", type=int, default=1)
    ap.add_argument("--k", type=float, nargs="+", default=[0.01])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()

    models = {dt: load_model(args.model, dtype=dt) for dt in ("float32", "bfloat16")}
    model32, tok = models["float32"]
    subsets = {lang: list(load_sequences(lang, "eval", tok, args.items, args.seq_len))
               for lang in args.code + args.general}
    score_seqs = [s for lang in args.code for s in load_sequences(lang, "score", tok, args.score_items, args.seq_len)]

    # masks, from the float32 model
    spot_scores = score(model32, score_seqs, "grad_x_weight", batch_size=args.batch)
    params = scoped_parameters(model32)
    magnitude = {n: p.detach().float().abs() for n, p in params.items()}
    masks = {}
    for k in args.k:
        spot = select_top_k(spot_scores, k, "global")
        masks[f"spot@{k}"] = spot
        masks[f"magnitude@{k}"] = select_top_k(magnitude, k, "global")
        for seed in (0, 1):
            masks[f"random_uniform:{seed}@{k}"] = random_uniform(spot, seed)

    result = {"model": args.model, "subsets": list(subsets), "items": args.items, "seq_len": args.seq_len,
              "k": args.k, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "cpu_flags": cpu_flags(), "machine": platform.machine(), "load_before": os.getloadavg()}

    # 1-2. baseline losses and time, interleaved
    base, times = {}, {dt: [] for dt in models}
    for dt, (model, _) in models.items():
        base[dt] = losses(model, subsets, args.batch)  # also the warm-up
    for _ in range(args.reps):
        for dt, (model, _) in models.items():
            t = time.perf_counter()
            losses(model, subsets, args.batch)
            times[dt].append(time.perf_counter() - t)
    result["baseline"] = {
        s: {"float32": mean(base["float32"][s]), "bfloat16": mean(base["bfloat16"][s]),
            "relative_difference": mean(base["bfloat16"][s]) / mean(base["float32"][s]) - 1,
            "max_item_relative_difference": max(abs(b / a - 1) for a, b in zip(base["float32"][s],
                                                                                 base["bfloat16"][s]))}
        for s in subsets}
    result["seconds"] = {dt: statistics.median(v) for dt, v in times.items()}
    result["seconds_all"] = times
    result["speed_up_bfloat16"] = result["seconds"]["float32"] / result["seconds"]["bfloat16"]

    # 3. masks in both dtypes
    ablated_losses = {}
    for dt, (model, _) in models.items():
        for name, m in masks.items():
            with ablated(model, m):
                ablated_losses.setdefault(name, {})[dt] = losses(model, subsets, args.batch)
    result["masks"] = {name: {dt: {"mean": mean([x for v in d.values() for x in v]),
                                   **{s: mean(v) for s, v in d.items()}} for dt, d in per.items()}
                       for name, per in ablated_losses.items()}
    same = {}
    for scope in ["mean", *subsets]:
        o = {dt: order({n: result["masks"][n][dt][scope] for n in masks}) for dt in models}
        same[scope] = {"float32": o["float32"], "bfloat16": o["bfloat16"], "same": o["float32"] == o["bfloat16"]}
    result["mask_order"] = same
    result["rises"] = rises(result)
    result["max_abs_rise_difference"] = max(abs(v["difference"]) for m in result["rises"].values() for v in m.values())
    result["max_abs_baseline_relative_difference"] = max(abs(v["relative_difference"])
                                                         for v in result["baseline"].values())
    result["within_1_percent"] = result["max_abs_baseline_relative_difference"] <= 0.01
    result["same_mask_order"] = all(v["same"] for v in same.values())
    result["seconds_total"] = time.perf_counter() - started
    result["load_after"] = os.getloadavg()

    out = Path(args.out or ROOT / "benchmarks" / "results" / f"eval_dtype_{args.model}_cpu.json")
    write_json(out, result)
    print(f"{'subset':<14} {'float32':>9} {'bfloat16':>9} {'rel. diff':>10}")
    for s, v in result["baseline"].items():
        print(f"{s:<14} {v['float32']:>9.4f} {v['bfloat16']:>9.4f} {v['relative_difference']:>+10.2%}")
    print(f"seconds per evaluation: float32 {result['seconds']['float32']:.1f}, bfloat16 "
          f"{result['seconds']['bfloat16']:.1f} (speed-up {result['speed_up_bfloat16']:.2f}x); "
          f"cpu flags {result['cpu_flags']}")
    for name, v in result["masks"].items():
        print(f"{name:<24} mean loss float32 {v['float32']['mean']:8.3f}  bfloat16 {v['bfloat16']['mean']:8.3f}")
    print(f"largest |rise difference| (bfloat16 − float32): {result['max_abs_rise_difference']:.4f}")
    print(f"same mask order: {result['same_mask_order']} ({', '.join(s for s, v in same.items() if not v['same']) or 'all scopes'})"
          f"; baseline within 1%: {result['within_1_percent']}; total {result['seconds_total']:.0f} s -> {out}")


if __name__ == "__main__":
    main()
