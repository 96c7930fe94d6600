"""Baseline greedy pass@1 of a model in each prompt format (raw completion, chat template), to choose the format a
run uses; per-problem outcomes and completions go to a JSONL file, appended per chunk (an interrupted run keeps
what it measured and resumes after it).

    python benchmarks/pass_at_1_baseline.py --model qwen2.5-coder-0.5b --formats chat raw
    python benchmarks/pass_at_1_baseline.py --model random:qwen2 --problems 4 --max-new-tokens 8   # smoke test

Prints, per format and subset, passed / n with a Wilson 95% interval, seconds and the machine's load average.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import sys
import time

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spot_utils.analysis.stats import wilson_interval  # noqa: E402
from spot_utils.data import eval_sets  # noqa: E402
from spot_utils.data.models import load_model  # noqa: E402
from spot_utils.measure.evaluation import PROMPT_FORMATS, pass_at_1, pass_rates  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--formats", nargs="+", default=list(PROMPT_FORMATS), choices=PROMPT_FORMATS)
    ap.add_argument("--subset", default="humaneval", choices=("humaneval", "mbpp"))
    ap.add_argument("--problems", type=int, default=None, help="the first N problems (default: all)")
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=16, help="problems per appended chunk")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="JSONL path (default benchmarks/results/pass_at_1_<model>_cpu.jsonl)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out or Path(__file__).parent / "results" /
               f"pass_at_1_{args.model.replace(':', '-').replace('/', '-')}_cpu.jsonl")
    done = pd.read_json(out, lines=True) if out.is_file() and out.stat().st_size else pd.DataFrame()
    model, tokenizer = load_model(args.model, dtype=args.dtype)
    problems = eval_sets.humaneval() if args.subset == "humaneval" else eval_sets.subsample(eval_sets.mbpp(), 200, 0)
    problems = problems[: args.problems]
    for fmt in args.formats:
        have = set() if done.empty else set(done.loc[done["prompt_format"] == fmt, "task_id"].astype(str))
        for lo in range(0, len(problems), args.chunk):
            chunk = [p for p in problems[lo: lo + args.chunk] if str(p["task_id"]) not in have]
            if not chunk:
                continue
            start, load = time.perf_counter(), os.getloadavg()[0]
            he, mb = (chunk, []) if args.subset == "humaneval" else ([], chunk)
            rows = pass_at_1(model, tokenizer, he, mb, args.max_new_tokens, args.batch_size, prompt_format=fmt)
            rows["item"] += lo
            rows["prompt_format"], rows["model"], rows["dtype"] = fmt, args.model, args.dtype
            rows["max_new_tokens"] = args.max_new_tokens
            rows["chunk_seconds"], rows["load_average"] = round(time.perf_counter() - start, 1), load
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a", encoding="utf-8") as f:
                for rec in rows.to_dict("records"):
                    f.write(json.dumps(rec) + "\n")
            print(f"{fmt} {lo + len(chunk)}/{len(problems)}: {int(rows['pass@1'].sum())}/{len(rows)} passed, "
                  f"{time.perf_counter() - start:.0f} s, load {load:.1f}", flush=True)
    table = pd.read_json(out, lines=True)
    for fmt, g in table.groupby("prompt_format"):
        for subset, r in pass_rates(g).items():
            lo, hi = wilson_interval(r["passed"], r["n"])
            print(f"{args.model} {fmt} {subset}: {r['passed']}/{r['n']} = {r['pass@1']:.3f} "
                  f"(Wilson 95% {lo:.3f}-{hi:.3f}), {g['chunk_seconds'].drop_duplicates().sum():.0f} s")


if __name__ == "__main__":
    main()
