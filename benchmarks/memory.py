"""Peak host memory of stages 02, 03 and 05 against the number of tensors (decoder layers) and of languages.

    PYTHONPATH=. python benchmarks/memory.py --out benchmarks/results/memory_cpu.json
    PYTHONPATH=. python benchmarks/memory.py --repo /path/to/older/checkout --out ...   # the same for other code

For every layer count (--layers) a random Llama-shaped model (--hidden; saved as a local folder) is made; for every
language count (--counts) random per-language scores of its decoder layers, both halves and the full score (written
with spot_utils.base.run_files.save_tensors, as stage 01 writes them). Each stage then runs in its own process
(benchmarks/stage_runner.py), so its peak resident set size is its own. Printed per stage and setting: the peak,
the target (4 × the largest scored tensor in float32 + the bit-packed masks in flight, (2L + 8) · E/8 bytes + 1 GiB
+ the model in float32 where the stage loads it: stage 03) and one language's scores (s = 4E bytes). Memory that
streams tensor by tensor is flat: the peak minus its model and masks allowance changes by much less than s
between the settings.
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

STAGES = ("02_aggregation", "03_selection", "05_overlap")
LOADS_MODEL = ("03_selection",)


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
    """Random signed scores (heavy-tailed, as real ones are, and sharing a component across languages, so that
    the languages' top-k sets overlap as real ones do) of both halves of every language and the general text,
    and the full score (their sum), as stage 01 writes them."""
    gen = torch.Generator().manual_seed(seed)
    common = {n: torch.randn(s, generator=gen) * torch.rand(s, generator=gen).pow(4) for n, s in shapes.items()}
    for lang in params["languages"] + [params["general_language"]]:
        halves = [{n: common[n] + 0.5 * torch.randn(s, generator=gen) * torch.rand(s, generator=gen).pow(4)
                   for n, s in shapes.items()} for _ in runs.HALVES]
        for half, scores in zip(runs.HALVES, halves):
            runs.save_tensors(runs.scores_path(params, lang, half), scores, dict(language=lang, half=half))
        runs.save_tensors(runs.scores_path(params, lang), {n: halves[0][n] + halves[1][n] for n in shapes},
                          dict(language=lang))
        del halves
    del common
    # the record stage 01 writes last: the later stages check it before any work
    write_json(runs.stage_record_path(params, "01_scoring"), dict(stage="01_scoring", written_by="benchmarks/memory.py"))


def target_mib(stage: str, largest: int, entries: int, languages: int, model_params: int) -> float:
    """The memory target of a stage (module docstring), MiB."""
    masks = (2 * languages + 8) * entries / 8
    model = 4 * model_params if stage in LOADS_MODEL else 0
    return (4 * 4 * largest + masks + 2**30 + model) / 2**20


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 8], help="decoder layer counts (tensor counts)")
    ap.add_argument("--counts", type=int, nargs="+", default=[2, 9], help="numbers of languages")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--repo", default=str(ROOT), help="the checkout whose stages to run (default: this one)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows, settings = [], []
    for layers in args.layers:
        with tempfile.TemporaryDirectory(prefix="spot-memory-") as tmp:
            tmp = Path(tmp)
            env = dict(os.environ, SPOT_RUNS_DIR=str(tmp / "runs"), SPOT_REPORTS_DIR=str(tmp / "reports"),
                       SPOT_DATA_DIR=str(tmp / "data"))
            runs.RUNS_DIR = tmp / "runs"  # where write_scores puts them; the stages read SPOT_RUNS_DIR
            model = save_random_llama(tmp / "model", args.hidden, layers)
            shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
            model_params = sum(p.numel() for p in model.parameters())
            del model
            entries = sum(torch.Size(s).numel() for s in shapes.values())
            largest = max(torch.Size(s).numel() for s in shapes.values())
            settings.append(dict(layers=layers, tensors=len(shapes), scored_entries=entries, largest_tensor=largest,
                                 one_language_scores_mib=round(entries * 4 / 2**20, 1), model_params=model_params))
            for n in args.counts:
                params = dict(run_name=f"memory-{n}", model=str(tmp / "model"), languages=list(SCORED_LANGUAGES[:n]),
                              general_language="english", threads=1, k_grid=[0.1, 1.0, 5.0], k_detail=1.0,
                              configurations=["global"], n_permutations=0)
                write_scores(params, shapes, seed=n)
                for stage in args.stages:
                    r = stage_runner.run(stage, params, tmp / f"{stage}-{n}.json", Path(args.repo), env)
                    target = target_mib(stage, largest, entries, n, model_params)
                    rows.append(dict(r, layers=layers, tensors=len(shapes), languages=n, target_mib=round(target, 1),
                                     within_target=bool(r["peak_rss_mib"] <= target)))
                    print(f"{stage}, {layers} layers ({len(shapes)} tensors, s = {entries * 4 / 2**20:,.0f} MiB), {n} "
                          f"languages: peak RSS {r['peak_rss_mib']:,.0f} MiB, target {target:,.0f} MiB, "
                          f"{r['seconds']:.1f} s", flush=True)
    result = dict(command="PYTHONPATH=. python " + " ".join(["benchmarks/memory.py"] + (argv or sys.argv[1:])),
                  hidden=args.hidden, settings=settings, runs=rows, machine=platform.platform(),
                  torch=torch.__version__, spread={})
    for stage in args.stages:
        mine = [r for r in rows if r["stage"] == stage]
        # the peak minus what the target allows to grow (model, masks): flat when memory streams
        base = [r["peak_rss_mib"] - (r["target_mib"] - 1024 - 16 * next(s["largest_tensor"] for s in settings
                                                                          if s["layers"] == r["layers"]) / 2**20)
                for r in mine]
        spread = max(base) - min(base)
        largest_s = max(s["one_language_scores_mib"] for s in settings)
        result["spread"][stage] = dict(spread_mib=round(spread, 1), largest_one_language_mib=largest_s,
                                       all_within_target=all(r["within_target"] for r in mine))
        print(f"{stage}: peak minus its model and masks allowance spans {spread:,.0f} MiB over "
              f"{len(args.layers)} layer counts × {len(args.counts)} language counts (one language's scores at the "
              f"largest setting: {largest_s:,.0f} MiB); within the target everywhere: "
              f"{all(r['within_target'] for r in mine)}")
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
