"""All five stages on a random model with Llama-3.1-8B's layer shapes, vocabulary and embeddings but 4 decoder
layers: time, peak host memory and (on CUDA) peak GPU memory per stage.

    python benchmarks/gpu_end_to_end.py --device cuda --out benchmarks/results/end_to_end_8b-4layers_<gpu>.json
    PYTHONPATH=. python benchmarks/gpu_end_to_end.py --device cpu --small \
        --out benchmarks/results/end_to_end_small_cpu.json          # the same run, scaled down to fit a CPU

The model is built from its config (no download) in --dtype, saved as a local folder with a byte-level tokenizer
(token ids below 260, so most of the 128,256 embedding rows are never used, but they exist and are scored as
they would be), and named in the run's params like any local checkpoint. The corpora and evaluation sets are the
committed fixtures (tests/fixtures): the run needs no network and no data cache. Each stage's notebook code runs
in its own process (benchmarks/stage_runner.py), so the peaks are per stage. --small replaces the 8B shapes by
hidden 256 / intermediate 896 / vocabulary 8,192 and shortens the sequences, for a CPU.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import stage_runner  # noqa: E402
from scoring import LLAMA31_8B  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402

STAGES = ("01_scoring", "02_aggregation", "03_selection", "04_ablation", "05_overlap")
SMALL = dict(hidden_size=256, intermediate_size=896, num_attention_heads=8, num_key_value_heads=2, vocab_size=8192)


def save_model(folder: Path, shape: dict, layers: int, dtype: str) -> dict:
    """Build the random model in `dtype` and save it with a byte-level tokenizer; return its sizes."""
    from transformers import AutoModelForCausalLM, LlamaConfig
    from spot_utils.data.models import byte_tokenizer
    tokenizer = byte_tokenizer()
    config = LlamaConfig(**{**shape, "num_hidden_layers": layers}, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    decoder = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n)
    return dict(parameters=sum(p.numel() for p in model.parameters()), decoder_parameters=decoder,
                vocab_size=config.vocab_size, hidden_size=config.hidden_size, layers=layers)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--small", action="store_true", help="CPU scale: small hidden size and vocabulary")
    ap.add_argument("--languages", nargs="+", default=["go", "rust", "java"])
    ap.add_argument("--sequences", type=int, default=4, help="score sequences per language")
    ap.add_argument("--max-len", type=int, default=None, help="token cap (default 1024; 256 with --small)")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--stages", nargs="+", default=list(STAGES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    max_len = args.max_len or (256 if args.small else 1024)
    shape = {**LLAMA31_8B, **(SMALL if args.small else {})}
    with tempfile.TemporaryDirectory(prefix="spot-e2e-") as tmp:
        tmp = Path(tmp)
        env = dict(os.environ, SPOT_RUNS_DIR=str(tmp / "runs"), SPOT_REPORTS_DIR=str(tmp / "reports"),
                   SPOT_DATA_DIR=str(tmp / "data"))
        start = time.perf_counter()
        sizes = save_model(tmp / "model", shape, args.layers, args.dtype)
        build_seconds = time.perf_counter() - start
        params = dict(run_name="end-to-end", model=str(tmp / "model"), dtype=args.dtype, device=args.device,
                      languages=args.languages, corpus_source=str(ROOT / "tests" / "fixtures" / "corpus"),
                      n_score_sequences=args.sequences, max_len=max_len, batch_size=args.batch_size,
                      checkpoint_every=2, k_grid=[0.1, 1.0, 5.0], k_detail=1.0, n_eval_sequences=2,
                      eval_max_len=max_len, random_seeds=[0], n_uniform_seeds=1, cross_ablation_sequences=1,
                      n_permutations=100)
        rows = []
        for stage in args.stages:
            r = stage_runner.run(stage, params, tmp / f"{stage}.json", ROOT, env)
            rows.append(r)
            print(f"{stage}: {r['seconds']:.1f} s, peak RSS {r['peak_rss_mib']:,.0f} MiB"
                  + (f", CUDA peak {r['cuda_peak_mib']:,.0f} MiB" if "cuda_peak_mib" in r else ""), flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    result = dict(command="python " + " ".join(["benchmarks/gpu_end_to_end.py"] + (argv or sys.argv[1:])),
                  device=args.device, device_name=device_name, dtype=args.dtype, model=sizes,
                  build_and_save_seconds=round(build_seconds, 1), params=params, stages=rows,
                  machine=platform.platform(), torch=torch.__version__, cpu_count=os.cpu_count())
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
