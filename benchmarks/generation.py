"""Greedy generation speed at batch 1 and at the run's batch, and whether batching changes the outputs (prints a
table, writes JSON).

    python benchmarks/generation.py --model qwen2.5-coder-0.5b --problems 8 --batch-size 8 --max-new-tokens 128
    python benchmarks/generation.py --model random:qwen2 --problems 2 --batch-size 2 --max-new-tokens 8  # smoke test

On the first `--problems` HumanEval problems in `--prompt-format`, per dtype (bfloat16; float32 with --fp32): the
completions' tokens per second at batch 1 and at `--batch-size` (generate_greedy, left padding, KV cache), the share
of problems whose batched completion equals the batch-1 one, and pass@1 of both (executed) with their difference.
The load average is recorded beside the numbers: on a shared machine speed follows the load.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import platform
import sys
import time

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.data import eval_sets  # noqa: E402
from spot_utils.data.models import load_model  # noqa: E402
from spot_utils.measure.evaluation import PROMPT_FORMATS, coding_program, coding_prompts, generate_greedy  # noqa: E402
from spot_utils.measure.execution import run_many  # noqa: E402


def timed_completions(model, tok, prompts, stop, max_new_tokens, batch_size):
    start = time.perf_counter()
    texts = generate_greedy(model, tok, prompts, stop, max_new_tokens, batch_size)
    seconds = time.perf_counter() - start
    tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    return texts, seconds, tokens


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--problems", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--prompt-format", default="chat", choices=PROMPT_FORMATS)
    ap.add_argument("--fp32", action="store_true", help="also measure float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    problems = eval_sets.humaneval()[: args.problems]
    results = []
    for dtype in ["bfloat16"] + (["float32"] if args.fp32 else []):
        model, tok = load_model(args.model, dtype=dtype)
        prompts, stop = coding_prompts("humaneval", problems, args.prompt_format, tok)
        by_batch = {}
        for batch in (1, args.batch_size):
            load = os.getloadavg()[0]
            texts, seconds, tokens = timed_completions(model, tok, prompts, stop, args.max_new_tokens, batch)
            passed = [r.passed for r in run_many([coding_program("humaneval", p, c, args.prompt_format)
                                                  for p, c in zip(problems, texts)], timeout=20)]
            by_batch[batch] = texts
            results.append(dict(dtype=dtype, batch_size=batch, seconds=round(seconds, 1), completion_tokens=tokens,
                                tokens_per_s=round(tokens / seconds, 2), pass_at_1=sum(passed) / len(passed),
                                load_average=round(load, 1)))
            print(f"{dtype} batch {batch}: {tokens} tokens in {seconds:.0f} s = {tokens / seconds:.2f} tokens/s, "
                  f"pass@1 {sum(passed)}/{len(passed)}, load average {load:.1f}", flush=True)
        same = sum(a == b for a, b in zip(by_batch[1], by_batch[args.batch_size])) / len(problems)
        one, many = (r for r in results[-2:])
        results[-1].update(agreement_with_batch_1=same, pass_at_1_minus_batch_1=many["pass_at_1"] - one["pass_at_1"],
                           speedup_over_batch_1=round(many["tokens_per_s"] / one["tokens_per_s"], 2))
        print(f"{dtype}: batch {args.batch_size} vs 1: {same:.0%} identical completions, pass@1 difference "
              f"{many['pass_at_1'] - one['pass_at_1']:+.3f}, speed-up {many['tokens_per_s'] / one['tokens_per_s']:.2f}x")
        del model
    out = Path(args.out or Path(__file__).parent / "results" /
               f"generation_{args.model.replace(':', '-').replace('/', '-')}_cpu.json")
    write_json(out, dict(model=args.model, problems=args.problems, prompt_format=args.prompt_format,
                         max_new_tokens=args.max_new_tokens, threads=torch.get_num_threads(), cpus=os.cpu_count(),
                         machine=platform.processor() or platform.machine(), results=results))
    print("written", out)


if __name__ == "__main__":
    main()
