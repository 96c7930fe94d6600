"""Peak host memory of stages 02 and 03 with 2 and with 9 languages on the same mid-size random model.

    PYTHONPATH=. python benchmarks/memory.py --out benchmarks/results/memory_cpu.json
    PYTHONPATH=. python benchmarks/memory.py --repo /path/to/older/checkout --out ...   # the same for other code

A random Llama-shaped model (--hidden, --layers; saved as a local folder) and random per-language scores of its
decoder layers (written with spot_utils.base.run_files.save_tensors, as stage 01 writes them) are set up once per language
count; each stage then runs in its own process (benchmarks/stage_runner.py), so its peak resident set size is
its own. Memory independent of the number of languages means: the 9-language peak minus the 2-language peak is
below one language's scores (4 bytes per scored entry).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import stage_runner  # noqa: E402
from spot_utils import scoped_parameters
from spot_utils.base import run_files as runs  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.experiment.params import SCORED_LANGUAGES  # noqa: E402

STAGES = ("02_aggregation", "03_selection")


def save_random_llama(folder: Path, hidden: int, layers: int):
    """A random Llama-shaped model (byte tokenizer) saved with save_pretrained; returns the model."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    from spot_utils.data.models import byte_tokenizer
    tokenizer = byte_tokenizer()
    config = LlamaConfig(hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=4, vocab_size=len(tokenizer),
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def write_scores(params: dict, shapes: dict, seed: int) -> None:
    """Random signed scores (heavy-tailed, as real ones are) for every language and the general text."""
    gen = torch.Generator().manual_seed(seed)
    for lang in params["languages"] + [params["general_language"]]:
        scores = {n: torch.randn(s, generator=gen) * torch.rand(s, generator=gen).pow(4) for n, s in shapes.items()}
        runs.save_tensors(runs.scores_path(params, lang), scores, dict(language=lang))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--counts", type=int, nargs=2, default=[2, 9], help="the two numbers of languages")
    ap.add_argument("--repo", default=str(ROOT), help="the checkout whose stages to run (default: this one)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="spot-memory-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, SPOT_RUNS_DIR=str(tmp / "runs"), SPOT_REPORTS_DIR=str(tmp / "reports"),
                   SPOT_DATA_DIR=str(tmp / "data"))
        runs.RUNS_DIR = tmp / "runs"  # where write_scores puts them; the stages read SPOT_RUNS_DIR
        model = save_random_llama(tmp / "model", args.hidden, args.layers)
        shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
        entries = sum(torch.Size(s).numel() for s in shapes.values())
        del model
        one_language_mib = entries * 4 / 2**20
        rows = []
        for n in args.counts:
            params = dict(run_name=f"memory-{n}", model=str(tmp / "model"), languages=SCORED_LANGUAGES[:n],
                          general_language="english", threads=1, k_grid=[0.1, 1.0, 5.0], k_detail=1.0,
                          configurations=["global"])
            write_scores(params, shapes, seed=n)
            for stage in STAGES:
                r = stage_runner.run(stage, params, tmp / f"{stage}-{n}.json", Path(args.repo), env)
                rows.append(dict(r, languages=n))
                print(f"{stage} with {n} languages: peak RSS {r['peak_rss_mib']:,.0f} MiB, {r['seconds']:.1f} s",
                      flush=True)
    result = dict(command="PYTHONPATH=. python " + " ".join(["benchmarks/memory.py"] + (argv or sys.argv[1:])),
                  hidden=args.hidden, layers=args.layers, scored_entries=entries,
                  one_language_scores_mib=round(one_language_mib, 1), runs=rows, machine=platform.platform(),
                  torch=torch.__version__, differences={})
    for stage in STAGES:
        peaks = {r["languages"]: r["peak_rss_mib"] for r in rows if r["stage"] == stage}
        diff = peaks[args.counts[1]] - peaks[args.counts[0]]
        result["differences"][stage] = dict(peak_difference_mib=round(diff, 1),
                                            below_one_language=bool(diff < one_language_mib))
        print(f"{stage}: {args.counts[1]} minus {args.counts[0]} languages = {diff:+,.0f} MiB peak RSS; "
              f"one language's scores = {one_language_mib:,.0f} MiB")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
