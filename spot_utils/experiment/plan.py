"""What a run will cost before it runs: calls per stage times a measured cost per call, and the disk its score files
need (docs/METHOD.md, Stages).

    python -m spot_utils.experiment.plan params/qwen2.5-coder-0.5b.yaml --save-costs costs.json   # measures (minutes)
    python -m spot_utils.experiment.plan params/qwen2.5-coder-0.5b.yaml --costs costs.json

Stage 04's count is an upper bound read from the params (the sweep decides at run time which extension k values
and headline points it needs): the spot at every k; every control at the headline k values (k_detail and the spot's
comparable point) with its seeds and random_uniform's first seed at the other k; the spot's norm entries, the other
ablation modes, the contrastive regions (shared by the configurations), the outlier masks and random_uniform at
every extension k, authors_spot at its own k values (paper configuration) and random_uniform's other seeds at
every k of its curve that may bracket a compared point. Generation runs where the mask plan gives the heavy groups (the baseline and the heavy kinds of the mask-kind table at
k_detail).
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from ..base.io import write_json
from ..data.models import load_model
from ..measure.metric_groups import METRIC_GROUPS
from ..method.mask_kinds import MASK_KINDS, REFERENCE_CONTROL, controls, kinds
from ..method.scoring import scoped_parameters
from .ablation_plan import _seeds
from .params import load_params

SCORE_FILES_PER_LANGUAGE = 3  # stage 01: the language's scores and those of its two halves
BYTES = {"float32": 4, "bfloat16": 2}
HEADLINE_KS = 2  # k_detail and the spot's comparable point
COST_KEYS = ("score_sequence_s", "loss_sequence_s", "generation_token_s")


def stage04_entries(params: dict) -> dict[str, int]:
    """Upper bound of the masks stage 04 measures, by what they are (see the module docstring)."""
    ks, configs = list(params["k_grid"]), list(params["configurations"])
    headline = min(HEADLINE_KS, len(ks))
    counts = {"baseline": 1, "spot": len(ks) * len(configs)}
    for name, control in controls().items():
        per_config = headline * len(_seeds(control, params, True))
        if control.every_k:
            per_config += (len(ks) - headline) * len(_seeds(control, params, False))
        counts[name] = per_config * len(configs)
    counts["spot_norms"] = headline * len(configs)
    counts["other_modes"] = (len(params["ablation_modes"]) - 1) * len(configs)
    counts["contrastive"] = headline * len(kinds(ablation="stage03", k_param=None))  # once for every configuration
    for name in kinds(ablation="stage03"):
        row = MASK_KINDS[name]
        if row.k_param is not None:  # at its own k values, in the configuration that builds it
            counts[name] = len(params[row.k_param]) * sum(map(row.built_in, configs))
    counts["top_entries"] = len(params["outlier_counts"]) * len(configs)
    counts["extension"] = len(params["random_extension_k"]) * len(configs)
    # random_uniform's other seeds at the k values of its curve that bracket a compared point (not the headline ones)
    curve_ks = len(ks) + len(params["random_extension_k"]) - headline
    counts["bracket_seeds"] = curve_ks * (len(_seeds(controls()[REFERENCE_CONTROL], params, True)) - 1) * len(configs)
    return counts


def generation_calls(params: dict) -> int:
    """Masks that get the generation group: the baseline, the spot and random_uniform's headline seeds (at most
    heavy_seeds) per configuration at k_detail, the heavy contrastive regions once, and the heavy kinds ablated at
    their own k where k_detail is one of them, per configuration that builds them (0 when generation is off)."""
    if not params["generation"] or "generation" not in METRIC_GROUPS:
        return 0
    uniform = len(_seeds(controls()[REFERENCE_CONTROL], params, True)) if REFERENCE_CONTROL in controls() else 0
    if params["heavy_seeds"] is not None:
        uniform = min(uniform, params["heavy_seeds"])
    heavy, configs = kinds(heavy=True), params["configurations"]
    per_config = ("spot" in heavy) + uniform
    own_k = sum(sum(map(MASK_KINDS[k].built_in, configs))
                for k in kinds(ablation="stage03", heavy=True) if MASK_KINDS[k].k_param is not None
                and params["k_detail"] in params[MASK_KINDS[k].k_param])
    return 1 + per_config * len(configs) + sum(k in heavy for k in kinds(ablation="stage03", k_param=None)) + own_k


def run_plan(params: dict, costs: dict, scored_entries: int, n_eval_subsets: int,
             new_tokens_per_problem: float = 200.0) -> dict:
    """Calls per stage, seconds per call (from `costs`: seconds per scored sequence, per evaluated sequence and per
    generated token at the generation batch), hours, and the disk stage 01 needs for `scored_entries` scored
    parameters. Problems per generation call: HumanEval (generation_items, null = 164) plus MBPP (mbpp_items)."""
    missing = [k for k in COST_KEYS if k not in costs]
    if missing:
        raise KeyError(f"run_plan: costs lack {missing}; give {', '.join(COST_KEYS)}")
    scored = list(params["languages"])
    entries = stage04_entries(params)
    problems = (params["generation_items"] or 164) + (params["mbpp_items"] if params["mbpp_items"] is not None else 500)
    stages = [
        dict(stage="01_scoring", what="languages scored", calls=len(scored),
             per_call_s=params["n_score_sequences"] * costs["score_sequence_s"]),
        dict(stage="04_ablation: loss", what="masks (upper bound)", calls=sum(entries.values()),
             per_call_s=n_eval_subsets * params["n_eval_sequences"] * costs["loss_sequence_s"]),
        dict(stage="04_ablation: generation", what="masks generated", calls=generation_calls(params),
             per_call_s=problems * new_tokens_per_problem * costs["generation_token_s"]),
    ]
    for s in stages:
        s["hours"] = s["calls"] * s["per_call_s"] / 3600
    score_file_gb = scored_entries * BYTES[params["score_dtype"]] / 1e9
    return dict(stages=stages, stage04_entries=entries, total_hours=sum(s["hours"] for s in stages),
                score_file_gb=score_file_gb, score_files=len(scored) * SCORE_FILES_PER_LANGUAGE,
                disk_gb=score_file_gb * len(scored) * SCORE_FILES_PER_LANGUAGE)


def format_plan(plan: dict) -> str:
    """The plan as lines for a terminal or a params header."""
    lines = [f"{s['stage']}: {s['calls']} {s['what']} x {s['per_call_s']:.0f} s = {s['hours']:.1f} h"
             for s in plan["stages"]]
    lines.append("stage 04 masks: " + ", ".join(f"{k} {v}" for k, v in plan["stage04_entries"].items() if v))
    lines.append(f"total {plan['total_hours']:.1f} h; stage 01 disk: {plan['score_files']} score files x "
                 f"{plan['score_file_gb']:.2f} GB = {plan['disk_gb']:.1f} GB")
    return "\n".join(lines)


@torch.no_grad()
def _timed_forward(model, ids) -> float:
    start = time.perf_counter()
    model(input_ids=ids, use_cache=False)
    return time.perf_counter() - start


def measure_costs(params: dict, model_spec: str | None = None, repeats: int = 2) -> tuple[dict, int, int]:
    """(costs, scored entries, vocabulary size) measured on this machine with random token ids: a forward and
    backward pass of batch_size x max_len in dtype (per sequence), a forward pass of batch_size x eval_max_len in
    eval_dtype (per sequence), and 16 greedy steps at generation_batch_size from a 150-token prompt (per token
    of one problem, i.e. per step / batch). The fastest of `repeats` is kept."""
    model, tok = load_model(model_spec or params["model"], dtype=params["dtype"])
    vocab = len(tok)
    gen = torch.Generator().manual_seed(params["seed"])
    ids = torch.randint(0, vocab, (params["batch_size"], params["max_len"]), generator=gen)
    score = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        score.append((time.perf_counter() - start) / params["batch_size"])
        model.zero_grad(set_to_none=True)
    scored_entries = sum(p.numel() for p in scoped_parameters(model, params["score_include"]).values())
    model = model.to(getattr(torch, params["eval_dtype"] or params["dtype"]))
    ids = torch.randint(0, vocab, (params["batch_size"], params["eval_max_len"]), generator=gen)
    loss = min(_timed_forward(model, ids) for _ in range(repeats)) / params["batch_size"]
    batch = params["generation_batch_size"]
    prompt = torch.randint(0, vocab, (batch, 150), generator=gen)
    steps = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=16,
                       min_new_tokens=16, use_cache=True, pad_token_id=tok.pad_token_id)
        steps.append((time.perf_counter() - start) / 16 / batch)
    return dict(score_sequence_s=min(score), loss_sequence_s=loss, generation_token_s=min(steps)), scored_entries, vocab


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("params")
    ap.add_argument("--costs", help="JSON with " + ", ".join(COST_KEYS) + ", scored_entries and n_eval_subsets "
                    "(else measured here)")
    ap.add_argument("--save-costs", help="write the measured costs to this JSON file (for --costs)")
    ap.add_argument("--new-tokens-per-problem", type=float, default=200.0)
    ap.add_argument("--repeats", type=int, default=2, help="timed repetitions per cost (the fastest is kept)")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    n_subsets = len(params["languages"]) + len(params["unseen_languages"]) + len(params["general_eval"])
    if args.costs:
        costs = json.loads(open(args.costs, encoding="utf-8").read())
        scored, n_subsets = costs["scored_entries"], costs.get("n_eval_subsets", n_subsets)
    else:
        costs, scored, _ = measure_costs(params, repeats=args.repeats)
        measured = dict(costs, scored_entries=scored, n_eval_subsets=n_subsets, load_average=os.getloadavg()[0])
        print(json.dumps(measured))
        if args.save_costs:
            write_json(args.save_costs, measured)
    print(format_plan(run_plan(params, costs, scored, n_subsets, args.new_tokens_per_problem)))


if __name__ == "__main__":
    main()
