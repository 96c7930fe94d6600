"""Run parameters: one YAML per run (papermill -f), validated before anything runs."""
from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from .paths import REPO_ROOT

SCORED_LANGUAGES = ["bash", "csharp", "cpp", "go", "java", "javascript", "ruby", "rust", "typescript"]
UNSEEN_LANGUAGES = ["python", "c", "php"]
CODE_LANGUAGES = SCORED_LANGUAGES + ["julia"] + UNSEEN_LANGUAGES
GENERAL_LANGUAGES = ["english", "english_modern", "english_doc"]


def _is_str(v):
    return isinstance(v, str) and v != ""


def _is_int(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_list_of(ok):
    return lambda v: isinstance(v, list) and all(ok(x) for x in v)


def _is_k(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 100 and not math.isnan(v)


def _is_lang(v):
    return v in CODE_LANGUAGES or v in GENERAL_LANGUAGES


# key -> (check, what the check wants, default). Defaults run in seconds on a tiny model + fixture corpus.
SCHEMA = {
    "run_name": (lambda v: _is_str(v) and re.fullmatch(r"[\w.-]+", v), "a filename-safe name", "tiny"),
    "model": (_is_str, "a model spec (see spot_utils.load_model)", "random:llama"),
    "dtype": (lambda v: v in ("float32", "bfloat16", "float16"), "float32, bfloat16 or float16", "float32"),
    "device": (_is_str, "a torch device such as cpu or cuda", "cpu"),
    "seed": (_is_int(0), "an integer ≥ 0", 0),
    "threads": (lambda v: v is None or _is_int(1)(v), "null or an integer ≥ 1", None),
    "languages": (lambda v: _is_list_of(lambda x: x in CODE_LANGUAGES)(v) and len(v) > 0,
                  f"a non-empty list of code languages from {CODE_LANGUAGES}", SCORED_LANGUAGES),
    "unseen_languages": (_is_list_of(lambda x: x in CODE_LANGUAGES), "a list of code languages", UNSEEN_LANGUAGES),
    "general_language": (lambda v: v in GENERAL_LANGUAGES, f"one of {GENERAL_LANGUAGES}", "english"),
    "general_eval": (_is_list_of(lambda x: x in GENERAL_LANGUAGES), f"a list from {GENERAL_LANGUAGES}",
                     ["english", "english_doc"]),
    "corpus_source": (lambda v: v is None or _is_str(v), "null (offline packages), a folder with a subfolder or "
                      "<language>.jsonl per language, a .jsonl file or hf:<dataset> (rows with a language field)",
                      "tests/fixtures/corpus"),
    "eval_fraction": (lambda v: isinstance(v, float) and 0 < v < 1, "a fraction in (0, 1)", 0.34),
    "n_score_sequences": (_is_int(1), "an integer ≥ 1", 4),
    "max_len": (_is_int(2), "an integer ≥ 2", 64),
    "batch_size": (_is_int(1), "an integer ≥ 1", 4),
    "criterion": (lambda v: v in ("grad_x_weight", "abs_grad_x_weight", "fisher", "magnitude"),
                  "grad_x_weight, abs_grad_x_weight, fisher or magnitude", "grad_x_weight"),
    "aggregation": (lambda v: v in ("sum_abs", "normalized_sum", "rank_mean", "min", "max"),
                    "sum_abs, normalized_sum, rank_mean, min or max", "sum_abs"),
    "granularities": (lambda v: _is_list_of(lambda x: x in ("global", "per_tensor"))(v) and len(v) > 0,
                      "a non-empty list of global / per_tensor", ["global"]),
    "k_grid": (lambda v: _is_list_of(_is_k)(v) and len(v) > 0, "a non-empty list of k in (0, 100) (percent)",
               [0.1, 1.0, 5.0]),
    "k_detail": (_is_k, "a k in (0, 100) at which controls run", 1.0),
    "n_eval_sequences": (_is_int(1), "an integer ≥ 1", 2),
    "eval_max_len": (_is_int(2), "an integer ≥ 2", 64),
    "random_seeds": (lambda v: _is_list_of(_is_int(0))(v) and len(v) > 0, "a non-empty list of integers ≥ 0", [0, 1, 2]),
    # issue 4: scoring at full strength (scope parts, over-long sequences, checkpoints)
    "score_include": (lambda v: _is_list_of(lambda x: x in ("decoder_layers", "embeddings", "lm_head", "other",
                                                            "all"))(v) and len(v) > 0,
                      "a non-empty list from decoder_layers, embeddings, lm_head, other, all", ["decoder_layers"]),
    "overlong": (lambda v: v in ("chunk", "drop"), "chunk or drop (sequences longer than max_len)", "chunk"),
    "checkpoint_every": (lambda v: v is None or _is_int(1)(v), "null (no checkpoints) or an integer ≥ 1 "
                         "(sequences between scoring checkpoints)", None),
}
# --- issue 6: overlap statistics (stage 05) ---
SCHEMA.update({
    "n_permutations": (_is_int(0), "an integer ≥ 0 (0: no permutation check)", 1000),
})
DEFAULTS = {k: v[2] for k, v in SCHEMA.items()}


# --- issue 5: ablation controls, uncertainty, benchmarks, k-sweep (stage 04) ---
_MC = ("arc_easy", "arc_challenge", "hellaswag", "piqa", "boolq", "csqa", "openbookqa", "sciq", "winogrande", "mmlu")
SCHEMA.update({
    "ablation_modes": (lambda v: _is_list_of(lambda x: x in ("zero", "mean", "noise"))(v) and len(v) > 0
                       and v[0] == "zero", "a list of zero / mean / noise starting with zero (the paper's)", ["zero"]),
    "n_uniform_seeds": (_is_int(1), "an integer ≥ 1 (random_uniform seeds at every k, the first of random_seeds)", 1),
    "every_k": (lambda v: isinstance(v, bool), "true / false: per-tensor random, magnitude, code_minus_general, "
                "likelihood and multiple choice at every k instead of k_detail only", False),
    "outlier_counts": (_is_list_of(_is_int(1)), "a list of integers ≥ 1 (top entries of the aggregate)", [1, 10, 100]),
    "cross_ablation_sequences": (_is_int(0), "an integer ≥ 0 (eval sequences per language for the cross-ablation "
                                 "matrix at k_detail; 0: off)", 2),
    "likelihood_items": (_is_int(0), "an integer ≥ 0 (HumanEval / MBPP / multilingual MBPP reference solutions; "
                         "0: off)", 0),
    "likelihood_languages": (lambda v: v is None or _is_list_of(lambda x: x in CODE_LANGUAGES)(v),
                             "null (every code language of the run) or a list of code languages (multilingual MBPP)",
                             None),
    "likelihood_max_len": (_is_int(8), "an integer ≥ 8 (token cap of prompt + reference solution)", 512),
    "mc_benchmarks": (_is_list_of(lambda x: x in _MC), f"a list from {list(_MC)}", []),
    "mc_items": (_is_int(1), "an integer ≥ 1 (items per multiple-choice benchmark, a seeded subsample)", 50),
    "mc_batch_size": (_is_int(1), "an integer ≥ 1", 16),
    "generation": (lambda v: isinstance(v, bool), "true / false: HumanEval and MBPP pass@1 (GPU runs)", False),
    "gsm8k_items": (_is_int(0), "an integer ≥ 0 (GSM8K problems, greedy 8-shot exact match; 0: off — for models "
                    "big enough)", 0),
    "generation_items": (lambda v: v is None or _is_int(1)(v), "null (all: 164 HumanEval, 500 MBPP) or an integer ≥ 1",
                         None),
    "generation_max_new_tokens": (_is_int(1), "an integer ≥ 1", 512),
    "generation_batch_size": (_is_int(1), "an integer ≥ 1", 8),
    "exec_timeout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                     "seconds > 0 (wall clock per executed completion)", 10.0),
    "bootstrap_samples": (_is_int(100), "an integer ≥ 100", 1000),
})
DEFAULTS = {k: v[2] for k, v in SCHEMA.items()}


def validate(params: dict) -> dict:
    """Check every key and value; unknown keys and bad values raise one error listing all problems."""
    problems = [f"unknown key {k!r} (known: {', '.join(SCHEMA)})" for k in params if k not in SCHEMA]
    merged = {**DEFAULTS, **{k: v for k, v in params.items() if k in SCHEMA}}
    for key, value in merged.items():
        check, wants = SCHEMA[key][:2]
        if not check(value):
            problems.append(f"{key}: {value!r} is not {wants}")
    if not problems:
        if merged["general_language"] not in merged["general_eval"]:
            problems.append("general_eval must include general_language")
        if merged["k_detail"] not in merged["k_grid"]:
            problems.append(f"k_detail {merged['k_detail']} must be one of k_grid {merged['k_grid']}")
        if "julia" in merged["languages"] + merged["unseen_languages"] and merged["corpus_source"] is None:
            problems.append("julia has no offline source: set corpus_source to a folder holding julia/")
        overlap = set(merged["languages"]) & set(merged["unseen_languages"])
        if overlap:
            problems.append(f"languages and unseen_languages overlap: {sorted(overlap)}")
    if problems:
        raise ValueError("invalid parameters:\n  " + "\n  ".join(problems))
    return merged


def load_params(path: str | Path) -> dict:
    """Read and validate a params YAML file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    try:
        return validate(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def from_notebook(namespace: dict, names_before: set) -> dict:
    """Validate the parameters a notebook received: names defined since `names_before` that are not private."""
    given = {k: v for k, v in namespace.items() if k not in names_before and not k.startswith("_")}
    return validate(given)


def resolve_path(path: str | None) -> Path | None:
    """A params path, relative to the repository root unless absolute."""
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
