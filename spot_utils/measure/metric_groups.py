"""What the ablation experiment measures: the table of metric groups (METRIC_GROUPS), each built from the run's
params into an Evaluation of the model as it is now, and the Evaluators that run them, timed
(docs/METHOD.md, Metrics).

A group's evaluation returns one row per item (columns subset, item and its item metrics), so that every metric
gets a bootstrap interval and every mask a paired test against the reference control. Cheap groups run for every
mask; heavy ones only where the mask plan asks (ablation_plan.plan_metrics).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
import math
import time
from typing import Callable

import numpy as np
import pandas as pd

from ..base.registry import Registry
from ..data import eval_sets as evalsets
from .evaluation import encode_pairs, gsm8k_accuracy, item_losses, pass_at_1
from .multiple_choice import MultipleChoice

COSTS = ("cheap", "heavy")


@dataclass
class Evaluation:
    """A built metric group: run() -> per-item frame of the model as it is now; sizes: items per subset;
    chance: expected score of guessing per subset, where that is defined (multiple choice); skip(frames of the
    groups run before it in this call) -> a frame to use instead of running, or None to run."""
    run: Callable[[], pd.DataFrame]
    sizes: dict[str, int]
    chance: dict[str, float] = field(default_factory=dict)
    skip: Callable[[dict], pd.DataFrame | None] | None = None


@dataclass(frozen=True)
class MetricGroup:
    """build(params, model, tokenizer, loss_subsets, work_dir) -> Evaluation, or None when the params leave the
    group off; item_metrics: the per-item columns reported; cost: 'cheap' (every mask) or 'heavy' (the masks and k
    of the plan); loss_like: rows through metrics.loss_rows (loss, perplexity, accuracy, loss_rise) and a paired test
    on the first item metric only, instead of a mean with an interval and a test per item metric."""
    build: Callable
    item_metrics: tuple[str, ...]
    cost: str
    loss_like: bool = False


METRIC_GROUPS = Registry("metric group")


def register_metric_group(name: str, *, build: Callable, item_metrics, cost: str, loss_like: bool = False) -> MetricGroup:
    """Add a metric group under `name` (see MetricGroup); refused without a callable builder or item metrics."""
    if not callable(build):
        raise ValueError(f"metric group {name!r} has no implementation: build= must be callable")
    if cost not in COSTS:
        raise ValueError(f"metric group {name!r}: cost must be one of {COSTS}, got {cost!r}")
    item_metrics = tuple(item_metrics)
    if not item_metrics or not all(isinstance(m, str) and m for m in item_metrics):
        raise ValueError(f"metric group {name!r} needs at least one item metric name, got {item_metrics!r}")
    entry = MetricGroup(build, item_metrics, cost, bool(loss_like))
    METRIC_GROUPS.add(name, entry)
    return entry


def _loss(params, model, tokenizer, loss_subsets, work_dir):
    """Held-out loss and next-token accuracy per code and general-text subset (always on)."""
    return Evaluation(lambda: item_losses(model, loss_subsets, params["batch_size"], desc="loss"),
                      {s: len(v) for s, v in loss_subsets.items()})


def _likelihood(params, model, tokenizer, loss_subsets, work_dir):
    """Likelihood of reference solutions given their prompts (HumanEval, MBPP, multilingual MBPP; likelihood_items)."""
    if params["likelihood_items"] <= 0:
        return None
    langs = params["likelihood_languages"]
    langs = params["languages"] + params["unseen_languages"] if langs is None else langs
    pairs = evalsets.reference_pairs(languages=langs, n=params["likelihood_items"], seed=params["seed"])
    seqs, ctx = encode_pairs(tokenizer, pairs, params["likelihood_max_len"])
    return Evaluation(lambda: item_losses(model, seqs, params["batch_size"], desc="likelihood", context_lengths=ctx),
                      {s: len(v) for s, v in seqs.items()})


def _mc(params, model, tokenizer, loss_subsets, work_dir):
    """lm-eval multiple choice on a seeded subsample of each of mc_benchmarks."""
    if not params["mc_benchmarks"]:
        return None
    bench = {b: evalsets.subsample(evalsets.multiple_choice(b), params["mc_items"], params["seed"])
             for b in params["mc_benchmarks"]}
    mc = MultipleChoice(model, tokenizer, bench, work_dir, batch_size=params["mc_batch_size"])
    return Evaluation(mc.item_scores, mc.sizes, mc.chance)


def _generation(params, model, tokenizer, loss_subsets, work_dir):
    """Greedy pass@1 on HumanEval (generation_items, null = all 164) and a seeded MBPP subset (mbpp_items), executed
    in the confined executor, prompts in generation_prompt_format (generation). Not generated where the model is
    destroyed on code (generation_skip)."""
    if not params["generation"]:
        return None
    he = evalsets.subsample(evalsets.humaneval(), params["generation_items"], params["seed"])
    mb = evalsets.subsample(evalsets.mbpp(), params["mbpp_items"], params["seed"]) if params["mbpp_items"] != 0 else []
    code = [s for s in loss_subsets if s in set(params["languages"]) | set(params["unseen_languages"])]
    vocab = len(tokenizer)
    return Evaluation(lambda: pass_at_1(model, tokenizer, he, mb, params["generation_max_new_tokens"],
                                        params["generation_batch_size"], params["exec_timeout"],
                                        prompt_format=params["generation_prompt_format"]),
                      {"humaneval": len(he), **({"mbpp": len(mb)} if mb else {})},
                      skip=lambda done: generation_skip(done.get("loss"), code, vocab, he, mb))


def generation_skip(losses: pd.DataFrame | None, code_subsets, vocab: int, humaneval_problems, mbpp_problems
                    ) -> pd.DataFrame | None:
    """Per-problem rows without a value (pass@1 NaN, status 'not generated: destroyed') when the median over code
    subsets of the mean item loss is at or above ln |V| (analysis.destroyed's median rule, which this layer cannot
    import: the model's predictions on code then carry no more information, on average, than a uniform guess, and
    there is nothing worth executing); None (generate) otherwise or without a loss measurement."""
    if losses is None or not len(code_subsets):
        return None
    means = losses[losses["subset"].isin(code_subsets)].groupby("subset")["loss"].mean()
    if means.empty or float(np.median(means)) < math.log(vocab):
        return None
    rows = [{"subset": subset, "item": i, "task_id": str(p["task_id"]), "pass@1": float("nan"),
             "status": GENERATION_DESTROYED, "completion": None}
            for subset, problems in (("humaneval", humaneval_problems), ("mbpp", mbpp_problems))
            for i, p in enumerate(problems)]
    return pd.DataFrame(rows, columns=["subset", "item", "task_id", "pass@1", "status", "completion"])


GENERATION_DESTROYED = "not generated: destroyed"


def _math(params, model, tokenizer, loss_subsets, work_dir):
    """GSM8K greedy 8-shot exact match (gsm8k_items)."""
    if params["gsm8k_items"] <= 0:
        return None
    problems = evalsets.subsample(evalsets.gsm8k(), params["gsm8k_items"], params["seed"])
    return Evaluation(lambda: gsm8k_accuracy(model, tokenizer, problems, params["generation_max_new_tokens"],
                                             params["generation_batch_size"]),
                      {"gsm8k": len(problems)})


# registry order is evaluation order
register_metric_group("loss", build=_loss, item_metrics=("loss", "accuracy"), cost="cheap", loss_like=True)
register_metric_group("likelihood", build=_likelihood, item_metrics=("loss", "accuracy"), cost="heavy", loss_like=True)
register_metric_group("mc", build=_mc, item_metrics=("acc", "acc_norm"), cost="heavy")
register_metric_group("generation", build=_generation, item_metrics=("pass@1",), cost="heavy")
register_metric_group("math", build=_math, item_metrics=("exact_match",), cost="heavy")


def build_evaluators(params: dict, model, tokenizer, loss_subsets, work_dir, groups=None) -> "Evaluators":
    """Every registered metric group the params switch on (only those in `groups` if given), built on its seeded
    subsample, in registry order."""
    for name in groups or ():
        METRIC_GROUPS.pick(name)  # an unknown name fails with the table's names
    built = {}
    for name, group in METRIC_GROUPS.items():
        if groups is not None and name not in groups:
            continue
        evaluation = group.build(params, model, tokenizer, loss_subsets, work_dir)
        if evaluation is not None:
            built[name] = evaluation
    return Evaluators(built)


class Evaluators:
    """The built metric groups of a run (name -> Evaluation), each call timed; groups not built are skipped."""

    def __init__(self, groups: dict[str, Evaluation]):
        for name in groups:
            METRIC_GROUPS.pick(name)
        self.groups = dict(groups)
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)

    def __call__(self, groups) -> dict[str, pd.DataFrame]:
        out = {}
        for g in groups:
            if g in self.groups:
                start = time.perf_counter()
                skip = self.groups[g].skip
                skipped = skip(out) if skip is not None else None
                out[g] = skipped if skipped is not None else self.groups[g].run()
                self.seconds[g] += time.perf_counter() - start
                self.calls[g] += 1
        return out

    def sizes(self, group: str) -> dict[str, int]:
        """Items per subset of a group ({} when it is off)."""
        return self.groups[group].sizes if group in self.groups else {}

    def timings(self) -> dict:
        """Seconds in total and per call of each metric group (for the manifest)."""
        return {g: dict(seconds=round(s, 1), calls=self.calls[g], per_call=round(s / self.calls[g], 2))
                for g, s in self.seconds.items()}
