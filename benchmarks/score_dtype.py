"""Effect of storing score files in bfloat16 (params `score_dtype`) on the top-k masks: Jaccard of the masks
selected from float32-stored and from bfloat16-stored scores, at every k, for each language's top-k of |S_l| and
for the spot (top-k of the sum_abs aggregate).

    SPOT_DATA_DIR=/work/main/data PYTHONPATH=. python benchmarks/score_dtype.py --model smollm2-135m \
        --out benchmarks/results/score_dtype.json

Scores are computed once in float32 (as stage 01 does: `spot_utils.score`, float32 accumulators); the bfloat16
file holds the same values rounded to bfloat16 (runs.save_tensors(..., dtype="bfloat16")), which is what every
later stage would read back. Selection is exact with a total tie order, so a Jaccard below 1 comes from values
that bfloat16 rounds together across the threshold.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spot_utils import aggregate, load_model, score, select_top_k

from spot_utils.experiment import stage  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.analysis.overlap import jaccard  # noqa: E402
from spot_utils.experiment.params import validate  # noqa: E402
from spot_utils.base.run_files import load_tensors, save_tensors  # noqa: E402

K_GRID = [0.0001, 0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0]  # the paper's grid (params/full.yaml)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="a load_model spec")
    ap.add_argument("--languages", nargs="+", default=["go", "rust", "java"])
    ap.add_argument("--corpus-source", default=None, help="null: offline packages (SPOT_DATA_DIR); else a folder")
    ap.add_argument("--n", type=int, default=4, help="score sequences per language")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    P = validate(dict(model=args.model, languages=args.languages, corpus_source=args.corpus_source))
    model, tokenizer = load_model(args.model)
    seqs = stage.sequences(P, tokenizer, args.languages, "score", args.n, args.max_len)
    exact, stored, rows = {}, {}, []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for lang, s in seqs.items():
            exact[lang] = score(model, s, batch_size=4, name=lang)
            path = Path(tmp) / f"{lang}.safetensors"
            save_tensors(path, exact[lang], {"language": lang}, dtype="bfloat16")
            stored[lang] = load_tensors(path)[0]
    seconds = time.perf_counter() - start
    entries = sum(t.numel() for t in next(iter(exact.values())).values())
    subsets = {f"lang_{lang}": ({n: t.abs() for n, t in exact[lang].items()},
                                {n: t.abs() for n, t in stored[lang].items()}) for lang in exact}
    subsets["spot"] = (aggregate(exact), aggregate(stored))
    for name, (a, b) in subsets.items():
        for k in K_GRID:
            ma, mb = select_top_k(a, k), select_top_k(b, k)
            size = sum(int(m.sum()) for m in ma.values())
            rows.append(dict(subset=name, k_percent=k, size=size, jaccard=round(jaccard(ma, mb), 6)))
            print(f"{name:14s} k = {k:<7g}% ({size:>9,} entries): Jaccard fp32 vs bf16 = {rows[-1]['jaccard']:.6f}",
                  flush=True)
    result = dict(command="PYTHONPATH=. python " + " ".join(["benchmarks/score_dtype.py"] + (argv or sys.argv[1:])),
                  model=args.model, languages=args.languages, sequences_per_language=args.n, max_len=args.max_len,
                  scored_entries=entries, scoring_seconds=round(seconds, 1),
                  rows=rows,
                  min_jaccard={name: min(r["jaccard"] for r in rows if r["subset"] == name) for name in subsets},
                  machine=platform.platform(), torch=torch.__version__)
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
