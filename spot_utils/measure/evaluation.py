"""Held-out loss, perplexity and next-token accuracy per subset, and the likelihood of reference
solutions given their prompts (docs/METHOD.md, Metrics)."""
from __future__ import annotations

import re

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..method.losses import pad_batch, sequence_losses
from .execution import humaneval_program, mbpp_program, run_many


@torch.no_grad()
def item_losses(model, subsets: dict[str, list[torch.Tensor]], batch_size: int = 8, desc: str = "eval",
                context_lengths: dict[str, list[int]] | None = None) -> pd.DataFrame:
    """One row per evaluation sequence: subset, item, loss (mean token NLL), accuracy, n_tokens.

    context_lengths (optional, per subset and item): the first c tokens are context only; the loss and
    accuracy then cover just the tokens after them (the reference solution given its prompt). Batches mix
    subsets (sequences of similar length together: full batches, little padding); rows keep subset order.
    """
    device = next(model.parameters()).device
    jobs = [(subset, i) for subset, seqs in subsets.items() for i in range(len(seqs))]
    jobs.sort(key=lambda job: len(subsets[job[0]][job[1]]))
    found = {}
    for lo in tqdm(range(0, len(jobs), batch_size), desc=desc, unit="batch", leave=False):
        batch = jobs[lo: lo + batch_size]
        ids, attn = pad_batch([subsets[s][i] for s, i in batch], device)
        target = None
        if context_lengths is not None:
            target = attn.clone()
            for row_, (s, i) in enumerate(batch):
                target[row_, : context_lengths[s][i]] = 0
        loss, correct, n = sequence_losses(model, ids, attn, target)
        for row_, (s, i) in enumerate(batch):
            found[s, i] = dict(subset=s, item=i, loss=float(loss[row_]),
                               accuracy=float(correct[row_]) / float(n[row_]), n_tokens=int(n[row_]))
    return pd.DataFrame([found[s, i] for s, seqs in subsets.items() for i in range(len(seqs))],
                        columns=["subset", "item", "loss", "accuracy", "n_tokens"])


def encode_pairs(tokenizer, pairs: dict[str, list[tuple[str, str]]], max_len: int
                 ) -> tuple[dict[str, list[torch.Tensor]], dict[str, list[int]]]:
    """Token ids of context + continuation per item, and the context length of each.

    Context and continuation are tokenised separately (the tokenizer's special tokens on the context only)
    and concatenated, as lm-eval does; the continuation is cut to max_len − 1 tokens and the context is
    cut from the left to fit max_len.
    """
    seqs, ctx_lens = {}, {}
    for subset, items in pairs.items():
        seqs[subset], ctx_lens[subset] = [], []
        for context, continuation in items:
            ctx = tokenizer(context).input_ids
            cont = tokenizer(continuation, add_special_tokens=False).input_ids[: max_len - 1]
            ctx = ctx[-(max_len - len(cont)):]
            seqs[subset].append(torch.tensor(ctx + cont, dtype=torch.int32))
            ctx_lens[subset].append(len(ctx))
    return seqs, ctx_lens


HUMANEVAL_STOP = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_STOP = ("\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n```")


def truncate_at_stop(text: str, stop) -> str:
    """Text up to the first occurrence of any stop sequence."""
    cut = min([i for i in (text.find(s) for s in stop) if i >= 0], default=len(text))
    return text[:cut]


@torch.no_grad()
def generate_greedy(model, tokenizer, prompts: list[str], stop, max_new_tokens: int = 512, batch_size: int = 8,
                    desc: str = "generate") -> list[str]:
    """Greedy completions of raw prompts, batched with left padding, cut at the first stop sequence.

    The KV cache is switched on for this call only (never for loss evaluation); a batch stops as soon as
    every completion in it contains a stop sequence or ends with EOS.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList  # deferred: transformers, only when generating

    device = next(model.parameters()).device
    out = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for lo in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            batch = prompts[lo: lo + batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True).to(device)
            width = enc.input_ids.shape[1]

            class AllStopped(StoppingCriteria):
                def __call__(self, input_ids, scores, **kwargs):
                    texts = tokenizer.batch_decode(input_ids[:, width:], skip_special_tokens=True)
                    done = [any(s in t for s in stop) for t in texts]
                    eos = (input_ids[:, width:] == tokenizer.eos_token_id).any(1).tolist()
                    return all(d or e for d, e in zip(done, eos))

            gen = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([AllStopped()]))
            texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
            out += [truncate_at_stop(t, stop) for t in texts]
    finally:
        tokenizer.padding_side = side
    return out


PROMPT_FORMATS = ("raw", "chat")  # how a coding problem is put to the model (docs/METHOD.md, Metrics)
CHAT_INSTRUCTION = ("Please provide a self-contained Python script that solves the following problem in a markdown "
                    "code block:\n```\n{problem}\n```")
CHAT_ANSWER_START = ("Below is a Python script with a self-contained function that solves the problem and passes "
                     "corresponding tests:\n```python\n")
CHAT_STOP = ("\n```",)


def mbpp_prompt(problem: dict) -> str:
    """The raw MBPP prompt: task text and its first test in a docstring (as in the bigcode harness)."""
    return f'"""\n{problem["text"]}\n{problem["test_list"][0]}\n"""\n'


def _problem_text(subset: str, problem: dict) -> str:
    if subset == "humaneval":
        return problem["prompt"].strip()
    return f"{problem['text']}\nYour code should pass this test:\n{problem['test_list'][0]}"


def coding_prompts(subset: str, problems: list[dict], prompt_format: str, tokenizer=None) -> tuple[list[str], tuple]:
    """(prompts, stop sequences) of HumanEval or MBPP problems in a prompt format (PROMPT_FORMATS).

    raw: the HumanEval prompt itself (the model continues the function body) or mbpp_prompt; chat: the tokenizer's
    chat template around CHAT_INSTRUCTION, the assistant turn opened with CHAT_ANSWER_START (a Python code fence),
    so the completion is a whole script that ends at the closing fence (EvalPlus's instruction prompt).
    """
    if subset not in ("humaneval", "mbpp"):
        raise ValueError(f"unknown coding subset {subset!r}; use 'humaneval' or 'mbpp'")
    if prompt_format == "raw":
        return ([p["prompt"] for p in problems] if subset == "humaneval" else [mbpp_prompt(p) for p in problems],
                HUMANEVAL_STOP if subset == "humaneval" else MBPP_STOP)
    if prompt_format == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt format 'chat' needs a tokenizer with a chat template")
        return ([tokenizer.apply_chat_template([dict(role="user", content=CHAT_INSTRUCTION.format(
                    problem=_problem_text(subset, p)))], tokenize=False, add_generation_prompt=True) + CHAT_ANSWER_START
                 for p in problems], CHAT_STOP)
    raise ValueError(f"unknown prompt format {prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}")


def coding_program(subset: str, problem: dict, completion: str, prompt_format: str) -> str:
    """The program that checks one completion. A chat completion is a whole script: for HumanEval it follows the
    prompt (whose imports it may rely on, its function redefined), for MBPP it stands alone."""
    if subset == "humaneval":
        return humaneval_program(problem, completion if prompt_format == "raw" else "\n    pass\n\n" + completion)
    return mbpp_program(problem, completion)


def pass_at_1(model, tokenizer, humaneval_problems: list[dict], mbpp_problems: list[dict], max_new_tokens: int = 512,
              batch_size: int = 8, timeout: float = 10.0, workers: int = 2, prompt_format: str = "raw") -> pd.DataFrame:
    """Greedy pass@1 per problem, each completion executed with its tests in the confined executor
    (measure.execution): rows subset, item, task_id, pass@1 (1.0 / 0.0), status (passed | failed | timeout |
    memory | cpu) and the completion."""
    rows = []
    for subset, problems in (("humaneval", humaneval_problems), ("mbpp", mbpp_problems)):
        if not problems:
            continue
        prompts, stop = coding_prompts(subset, problems, prompt_format, tokenizer)
        completions = generate_greedy(model, tokenizer, prompts, stop, max_new_tokens, batch_size, desc=subset)
        results = run_many([coding_program(subset, p, c, prompt_format) for p, c in zip(problems, completions)],
                           workers=workers, timeout=timeout)
        rows += [{"subset": subset, "item": i, "task_id": str(p["task_id"]), "pass@1": float(r.passed),
                  "status": r.status, "completion": c}
                 for i, (p, c, r) in enumerate(zip(problems, completions, results))]
    return pd.DataFrame(rows, columns=["subset", "item", "task_id", "pass@1", "status", "completion"])


def pass_rates(outcomes: pd.DataFrame) -> dict[str, dict]:
    """{subset: {passed, n, pass@1}} counted from per-problem rows (one row per problem and subset)."""
    out = {}
    for subset, g in outcomes.groupby("subset", sort=False):
        if g["item"].duplicated().any():
            raise ValueError(f"pass_rates: subset {subset!r} has more than one row for an item")
        passed = int((g["pass@1"] == 1.0).sum())
        out[subset] = dict(passed=passed, n=len(g), **{"pass@1": passed / len(g)})
    return out


GSM8K_STOP = ("Question:", "\n\n")


def gsm8k_answer(text: str) -> str | None:
    """The number after the last 'answer is' (else the last number) of a completion, without ',' and '$'."""
    text = text.replace(",", "").replace("$", "")
    tail = text.rsplit("answer is", 1)[-1] if "answer is" in text else text
    numbers = re.findall(r"-?\d+(?:\.\d+)?", tail)
    if not numbers:
        return None
    value = numbers[0] if "answer is" in text else numbers[-1]
    return value.rstrip("0").rstrip(".") if "." in value else value


def gsm8k_accuracy(model, tokenizer, problems: list[dict], max_new_tokens: int = 256, batch_size: int = 8) -> pd.DataFrame:
    """Greedy 8-shot chain-of-thought exact match per problem (rows subset 'gsm8k', item, exact_match)."""
    completions = generate_greedy(model, tokenizer, [p["prompt"] for p in problems], GSM8K_STOP, max_new_tokens,
                                  batch_size, desc="gsm8k")
    return pd.DataFrame([dict(subset="gsm8k", item=i, exact_match=float(gsm8k_answer(c) == p["short_answer"]))
                         for i, (p, c) in enumerate(zip(problems, completions))])
