"""Scoring cost, measured in one run on one model and batch. Prints a table and writes JSON.

    python benchmarks/scoring.py --model random:llama --batch 2 --seq-len 128 --reps 3
    SPOT_DATA_DIR=/work/main/data python benchmarks/scoring.py --model smollm2-135m --batch 2 --seq-len 128
    python benchmarks/scoring.py --model random-8b --dtype bfloat16 --device cuda   # Llama-3.1-8B config, random
    python benchmarks/scoring.py --model random-135m --dtype bfloat16 --device cuda --batch 16  # SmolLM2's shape
    python benchmarks/scoring.py --model random-h128 --batch 8 --seq-len 64 --steps 4 --reps 7 --threads 2 \
        --no-memory     # the throughput check: 2 layers, hidden 128, vocabulary 32,000, 32 sequences of 64 tokens

1. time: a bare forward+backward of the batches (grads kept in .grad, no optimizer) vs the per-batch work of
   `score` on the same batches (grad_x_weight: `accumulate`, results still on the device); their ratio
   (target ≤ 1.10). `finalize` (θ ⊙ sum, copy to the CPU, where the public API returns scores) is a fixed cost per
   call, timed and reported apart: on a GPU it is dominated by the device-to-host copy (28 GB for an 8B model).
   Interleaved repetitions, median.
2. the reference way (batch 1, θ·grad multiplied and added for every parameter after each backward) vs
   `score`'s per-batch work at batch B, both on the device: sequences/s and the largest difference of their
   results; and the throughput of the whole public `spot_utils.score` call (scores on the CPU) and of the plain
   batched loop (1.) over the reference's: what scoring costs beyond batching.
3. peak memory (fresh subprocess per phase; CUDA allocator peak on GPU, sampled RSS on CPU) against
   weights + one fp32 accumulator + activations (activations = the peak of a forward pass that keeps its graph).
4. with --per-sequence: `score(criterion="fisher")` (one sequence per backward) vs torch.func per-sample
   gradients (vmap over chunks of `batch` sequences), at equal results.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spot_utils import load_model, score, scoped_parameters  # noqa: E402
from spot_utils.base.io import write_json  # noqa: E402
from spot_utils.method.losses import pad_batch, sequence_losses  # noqa: E402
from spot_utils.method.scoring import scoring_state, accumulate, finalize  # noqa: E402

LLAMA31_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0,
                  rms_norm_eps=1e-5, tie_word_embeddings=False)
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
LLAMA_H128 = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=32000, max_position_embeddings=2048, tie_word_embeddings=True)
RANDOM_SHAPES = {"random-8b": LLAMA31_8B, "random-135m": SMOLLM2_135M, "random-h128": LLAMA_H128}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def build(args):
    """(model, vocab size) on args.device in args.dtype."""
    if args.model in RANDOM_SHAPES:  # a real model's shape, random weights: no download
        from transformers import AutoModelForCausalLM, LlamaConfig
        shape = RANDOM_SHAPES[args.model]
        config = LlamaConfig(**{**shape, "num_hidden_layers": args.layers or shape["num_hidden_layers"],
                                "vocab_size": args.vocab or shape["vocab_size"]})
        torch.manual_seed(0)
        with torch.device(args.device):  # built in place, in the target dtype: no fp32 copy
            model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype))
        model.config.use_cache = False
        return model.eval(), config.vocab_size
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    return model, len(tok)


def batches(args, vocab):
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, vocab, (args.seq_len,), generator=gen) for _ in range(args.batch * args.steps)]
    return seqs, [seqs[i: i + args.batch] for i in range(0, len(seqs), args.batch)]


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def bare_steps(model, params, groups, device):
    """Forward + backward of every batch, grads accumulate in .grad (the training step minus the optimizer)."""
    with scoring_state(model, params):
        for batch in groups:
            sequence_losses(model, *pad_batch(batch, device), count_correct=False)[0].sum().backward()
        sync(device)
        for p in params.values():
            p.grad = None


def reference(model, params, seqs, device):
    """Batch 1; after each backward, acc += θ ⊙ grad for every parameter."""
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    with scoring_state(model, params):
        for s in seqs:
            sequence_losses(model, *pad_batch([s], device), count_correct=False)[0].sum().backward()
            for n, p in params.items():
                acc[n].add_(p.grad.float() * p.detach().float())
                p.grad = None
    sync(device)
    return acc


def ours(model, seqs, batch, device):
    """`score`'s per-batch work: the accumulators of `accumulate`, left on the device."""
    _, acc = accumulate(model, seqs, batch_size=batch)
    sync(device)
    return acc


def fisher_vmap(model, params, groups, device):
    """Σ_x (∇L(x))² from torch.func per-sample gradients, vmapped over each batch (B copies of the gradients)."""
    from torch.func import functional_call, grad, vmap
    rest = {n: p.detach() for n, p in model.named_parameters() if n not in params}

    def loss(p, ids):
        logits = functional_call(model, ({**rest, **p},), kwargs=dict(input_ids=ids[None])).logits[0, :-1]
        return torch.nn.functional.cross_entropy(logits.float(), ids[1:])
    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=device) for n, p in params.items()}
    weights = {n: p.detach() for n, p in params.items()}
    for batch in groups:  # equal lengths: no padding inside vmap
        per_sample = vmap(grad(loss), in_dims=(None, 0))(weights, torch.stack(batch).to(device))
        for n, g in per_sample.items():
            acc[n].add_(g.float().square().sum(0))
    sync(device)
    return {n: a.cpu() for n, a in acc.items()}


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_probe(args) -> dict:
    """Peak memory above the loaded model for one phase (run in a fresh process)."""
    model, vocab = build(args)
    params = scoped_parameters(model)
    _, groups = batches(args, vocab)
    batch = groups[0]
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base, peak, stop = rss_bytes(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.002)
        threading.Thread(target=sample, daemon=True).start()
    if args.probe == "forward":  # activations kept for backward
        with scoring_state(model, params):
            loss = sequence_losses(model, *pad_batch(batch, args.device))[0].sum()
            sync(args.device)
            del loss
    elif args.probe == "bare":
        bare_steps(model, params, [batch], args.device)
    else:
        score(model, batch, batch_size=args.batch)
    if cuda:
        top = torch.cuda.max_memory_allocated()
    else:
        time.sleep(0.02)
        stop.set()
        top = peak[0]
    return dict(phase=args.probe, base=base, peak_above_base=top - base)


def probe(args, phase) -> dict:
    cmd = [sys.executable, __file__, "--probe", phase] + [a for a in sys.argv[1:] if a != "--probe"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="random:llama", help="a load_model spec, or random-8b / random-135m "
                    "(Llama-3.1-8B / SmolLM2-135M shape, random weights)")
    ap.add_argument("--layers", type=int, default=None, help="random-8b / random-135m only: fewer decoder layers")
    ap.add_argument("--vocab", type=int, default=None, help="random-* only: another vocabulary size")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="batches per timed call")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (median reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--per-sequence", action="store_true", help="also time fisher: batch-1 loop vs torch.func vmap")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    ap.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.probe:
        print(json.dumps(memory_probe(args)))
        return

    model, vocab = build(args)
    params = scoped_parameters(model)
    seqs, groups = batches(args, vocab)
    n_params = sum(p.numel() for p in model.parameters())
    n_scoped = sum(p.numel() for p in params.values())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bare_steps(model, params, groups[:1], args.device)  # warm-up
    score(model, groups[0], batch_size=args.batch)
    t_bare, t_score, t_final, t_ref, t_public = [], [], [], [], []
    for _ in range(args.reps):  # interleaved: machine noise hits all alike
        t_bare.append(timed(lambda: bare_steps(model, params, groups, args.device))[0])
        t_public.append(timed(lambda: score(model, seqs, batch_size=args.batch))[0])
        t, acc = timed(lambda: ours(model, seqs, args.batch, args.device))
        t_score.append(t)
        t, result = timed(lambda: finalize(params, acc, "grad_x_weight"))
        t_final.append(t)
        del acc
        t, ref = timed(lambda: reference(model, params, seqs, args.device))
        t_ref.append(t)
        print(f"  repetition {len(t_ref)}: bare {t_bare[-1]:.3f} s, score {t_public[-1]:.3f} s, reference "
              f"{t_ref[-1]:.3f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    bare, ours_t, final_t, ref_t, public_t = (statistics.median(t) for t in (t_bare, t_score, t_final, t_ref, t_public))
    ref = {n: r.cpu() for n, r in ref.items()}
    scale = max(r.abs().max().item() for r in ref.values())
    diff = max((result[n] - ref[n]).abs().max().item() for n in ref)
    tokens = len(seqs) * args.seq_len
    res = dict(
        model=args.model, dtype=args.dtype, device=args.device, batch=args.batch, seq_len=args.seq_len,
        steps=args.steps, reps=args.reps, threads=torch.get_num_threads(), torch=torch.__version__,
        machine=platform.processor() or platform.machine(), load_average=os.getloadavg(),
        gpu=torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        parameters=n_params, scoped_parameters=n_scoped,
        bare_fwd_bwd_s=bare, score_s=ours_t, score_over_bare=ours_t / bare, finalize_s=final_t,
        reference_batch1_s=ref_t, reference_seq_per_s=len(seqs) / ref_t, ours_seq_per_s=len(seqs) / ours_t,
        speedup_vs_reference=ref_t / ours_t, max_abs_diff_vs_reference=diff, reference_max_abs=scale,
        public_score_s=public_t, public_score_over_reference=ref_t / public_t, bare_over_reference=ref_t / bare,
        tokens_per_s=tokens / ours_t,
        all_times=dict(bare=t_bare, score=t_score, finalize=t_final, reference=t_ref, public_score=t_public))
    if args.per_sequence:
        t_loop, t_vmap = [], []
        for _ in range(args.reps):
            t, loop = timed(lambda: score(model, seqs, criterion="fisher"))
            t_loop.append(t)
            t, vm = timed(lambda: fisher_vmap(model, params, groups, args.device))
            t_vmap.append(t)
        scale = max(v.abs().max().item() for v in loop.values())
        res.update(fisher_loop_s=statistics.median(t_loop), fisher_vmap_s=statistics.median(t_vmap),
                   fisher_max_abs_diff=max((vm[n] - loop[n]).abs().max().item() for n in loop),
                   fisher_max_abs=scale)
        res["all_times"].update(fisher_loop=t_loop, fisher_vmap=t_vmap)
    if res["gpu"]:
        peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in res["gpu"]), None)
        flops = 6 * n_params * tokens / ours_t  # ≈ forward + backward of every weight
        res.update(model_tflops=flops / 1e12, mfu=flops / (peak * 1e12) if peak else None)
    if not args.no_memory:
        del model, params, result, ref  # the probes run in fresh processes: leave them the device
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        mem = {ph: probe(args, ph) for ph in ("forward", "bare", "score")}
        acc_bytes = 4 * n_scoped
        act = mem["forward"]["peak_above_base"]
        bound = weight_bytes + acc_bytes + act
        res.update(weights_bytes=weight_bytes, fp32_accumulator_bytes=acc_bytes, activations_bytes=act,
                   base_after_load_bytes=mem["score"]["base"],
                   bare_peak_above_base_bytes=mem["bare"]["peak_above_base"],
                   score_peak_above_base_bytes=mem["score"]["peak_above_base"],
                   score_peak_over_bound=(weight_bytes + mem["score"]["peak_above_base"]) / bound,
                   memory_kind="CUDA allocator peak" if args.device.startswith("cuda") else "sampled RSS")
    report(res)
    if args.out:
        write_json(args.out, res)


def report(r):
    mb = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    print(f"{r['model']} · {r['dtype']} · {r['device']} ({r['gpu'] or r['machine']}, {r['threads']} threads) · "
          f"batch {r['batch']}×{r['seq_len']} tokens · {r['steps']} batches per call · median of {r['reps']}")
    print(f"  bare forward+backward     {r['bare_fwd_bwd_s']:.3f} s")
    print(f"  grad_x_weight scoring     {r['score_s']:.3f} s   ratio {r['score_over_bare']:.3f} (target ≤ 1.10)")
    if "finalize_s" in r:
        print(f"  finalize (θ ⊙ sum, to CPU) {r['finalize_s']:.3f} s once per score call")
    print(f"  reference batch-1 loop    {r['reference_seq_per_s']:.2f} seq/s   ours {r['ours_seq_per_s']:.2f} seq/s"
          f"   speed-up {r['speedup_vs_reference']:.2f}×   max |diff| {r['max_abs_diff_vs_reference']:.2e}"
          f" (max |score| {r['reference_max_abs']:.2e})")
    print(f"  throughput over the reference's: spot_utils.score {r['public_score_over_reference']:.2f}×, plain "
          f"batched loop {r['bare_over_reference']:.2f}× (load average {r['load_average'][0]:.1f}: on a shared "
          "machine the ratios of interleaved medians are what to read)")
    if "fisher_loop_s" in r:
        print(f"  fisher, batch-1 loop      {r['fisher_loop_s']:.3f} s   torch.func vmap over {r['batch']} "
              f"{r['fisher_vmap_s']:.3f} s   max |diff| {r['fisher_max_abs_diff']:.2e} (max {r['fisher_max_abs']:.2e})")
    if "mfu" in r:
        print(f"  {r['tokens_per_s']:,.0f} tokens/s, {r['model_tflops']:.1f} TFLOP/s, MFU {r['mfu']}")
    if "weights_bytes" in r:
        print(f"  memory ({r['memory_kind']}): weights {mb(r['weights_bytes'])} + fp32 accumulator "
              f"{mb(r['fp32_accumulator_bytes'])} + activations {mb(r['activations_bytes'])}; scoring peak above "
              f"the loaded model {mb(r['score_peak_above_base_bytes'])} (bare step: "
              f"{mb(r['bare_peak_above_base_bytes'])}); peak / bound {r['score_peak_over_bound']:.3f} "
              "(target ≤ 1.10)")


if __name__ == "__main__":
    main()
