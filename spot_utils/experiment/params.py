"""Run parameters: one YAML per run (papermill -f), validated before anything runs.

Keys that name options are checked against the one home of their names (OPTIONS): the criterion, control and
metric-group tables, the aggregations, scope parts, configurations, ablation modes, benchmarks and languages.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
import re
import socket

import torch
import yaml

from ..base.paths import REPO_ROOT, resolve_path
from ..data.eval_sets import MC_BENCHMARKS
from ..data.models import ACCEPTED, ASSEMBLED, DTYPES, EMBEDDED, TINY_CONFIGS
from ..data.sources import CODE_LANGUAGES, PROSE_LANGUAGES as GENERAL_LANGUAGES, SCORED_LANGUAGES, UNSEEN_LANGUAGES
from ..measure.evaluation import PROMPT_FORMATS
from ..method.ablation import MODES
from ..method.aggregation import AGGREGATIONS
from ..method.scoring import CRITERIA, OVERLONG, SCOPE_PARTS
from ..method.selection import CONFIGURATIONS
from ..method.tuning import DEFAULT_ARMS, TUNING_ARMS

# key -> the names it accepts (a registry is read at validation time: names registered later count)
OPTIONS = {"dtype": DTYPES, "criterion": CRITERIA, "aggregation": AGGREGATIONS, "score_include": SCOPE_PARTS,
           "overlong": OVERLONG, "configurations": CONFIGURATIONS, "ablation_modes": MODES,
           "mc_benchmarks": MC_BENCHMARKS, "languages": CODE_LANGUAGES, "unseen_languages": CODE_LANGUAGES,
           "likelihood_languages": CODE_LANGUAGES, "general_language": GENERAL_LANGUAGES,
           "general_eval": GENERAL_LANGUAGES, "general_references": GENERAL_LANGUAGES,
           "generation_prompt_format": PROMPT_FORMATS, "tuning_arms": TUNING_ARMS}


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a folder name: never "." or "..", no path, ≤ 64 chars
MAX_COUNT = 2**31 - 1  # the largest size or count a run may ask for: beyond it torch's indexing overflows
K_MIN = 1e-10  # percent: a smaller k selects less than one entry of a model with 10^12 parameters
MAX_TIMEOUT = 86400.0  # seconds: a day per executed completion; larger (or inf) overflows the executor's clock
HUB_HOST = "huggingface.co"


def _is_str(v):
    return isinstance(v, str) and v != ""


def _is_int(lo):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= MAX_COUNT


def _is_list_of(ok):
    return lambda v: isinstance(v, list) and all(ok(x) for x in v)


def _is_k(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and K_MIN <= v < 100 and not math.isnan(v)


def _is_device(v):
    """A device string torch can parse (whether this machine has it is preflight's check)."""
    try:
        torch.device(v)
    except (RuntimeError, TypeError):
        return False
    return True


def _one_of(key):
    """(check, wants) of a key taking one name of OPTIONS[key]."""
    return (lambda v: isinstance(v, str) and v in OPTIONS[key]), lambda: f"one of {', '.join(OPTIONS[key])}"


def _list_of(key, non_empty=True, first=None):
    """(check, wants) of a key taking a list of names of OPTIONS[key] (non-empty; starting with `first`)."""
    def check(v):
        return (_is_list_of(lambda x: isinstance(x, str) and x in OPTIONS[key])(v) and (len(v) > 0 or not non_empty)
                and (first is None or v[:1] == [first]))
    return check, lambda: (("a non-empty list" if non_empty else "a list") + f" from {', '.join(OPTIONS[key])}"
                           + (f", starting with {first}" if first else ""))


# key -> (check, what the check wants: text or a callable giving it, default). Defaults run in seconds on a tiny model + fixture corpus.
SCHEMA = {
    "run_name": (lambda v: isinstance(v, str) and RUN_NAME.fullmatch(v), "a folder name: 1-64 characters from "
                 "A-Z a-z 0-9 . _ -, starting with a letter or digit", "tiny"),
    "model": (_is_str, "a model spec (see spot_utils.load_model)", "random:llama"),
    "dtype": (*_one_of("dtype"), "float32"),
    "eval_dtype": (lambda v: v is None or v in DTYPES, lambda: "null (the model's dtype) or one of " + ", ".join(DTYPES)
                   + " (the dtype stage 04 evaluates and ablates the model in)", None),
    "device": (_is_device, "a torch device such as cpu, cuda or cuda:1", "cpu"),
    "seed": (_is_int(0), "an integer ≥ 0", 0),
    "threads": (lambda v: v is None or _is_int(1)(v), "null or an integer ≥ 1", None),
    "languages": (*_list_of("languages"), list(SCORED_LANGUAGES)),
    "unseen_languages": (*_list_of("unseen_languages", non_empty=False), list(UNSEEN_LANGUAGES)),
    "general_language": (*_one_of("general_language"), "english"),
    "general_eval": (*_list_of("general_eval", non_empty=False), list(GENERAL_LANGUAGES)),
    "general_references": (*_list_of("general_references"), ["english", "english_modern"]),  # each in general_eval
    "corpus_source": (lambda v: v is None or _is_str(v), "null (offline packages), a folder with a subfolder or "
                      "<language>.jsonl per language, a .jsonl file or hf:<dataset> (rows with a language field)",
                      "tests/fixtures/corpus"),
    "eval_fraction": (lambda v: isinstance(v, float) and 0 < v < 1, "a fraction in (0, 1)", 0.34),
    "n_score_sequences": (_is_int(1), "an integer ≥ 1", 4),
    "max_len": (_is_int(2), "an integer ≥ 2", 64),
    "batch_size": (_is_int(1), "an integer ≥ 1", 4),
    "criterion": (*_one_of("criterion"), "grad_x_weight"),
    "aggregation": (*_one_of("aggregation"), "sum_abs"),
    "configurations": (*_list_of("configurations"), list(CONFIGURATIONS)),
    "k_grid": (lambda v: _is_list_of(_is_k)(v) and len(v) > 0, f"a non-empty list of k in [{K_MIN:g}, 100) (percent)",
               [0.1, 1.0, 5.0]),
    "k_detail": (_is_k, f"a k in [{K_MIN:g}, 100) at which controls run", 1.0),
    "n_eval_sequences": (_is_int(1), "an integer ≥ 1", 2),
    "eval_max_len": (_is_int(2), "an integer ≥ 2", 64),
    "random_seeds": (lambda v: _is_list_of(_is_int(0))(v) and len(v) > 0, "a non-empty list of integers ≥ 0", [0, 1, 2]),
    "score_include": (*_list_of("score_include"), ["decoder_layers"]),
    "overlong": (*_one_of("overlong"), "chunk"),  # sequences longer than max_len
    "checkpoint_every": (lambda v: v is None or _is_int(1)(v), "null (no checkpoints) or an integer ≥ 1 "
                         "(sequences between scoring checkpoints)", None),
    "score_dtype": (lambda v: v in ("float32", "bfloat16"), "float32 or bfloat16 (dtype of the score files on disk; "
                    "scores always accumulate in float32)", "float32"),
    # overlap statistics (stage 05)
    "n_permutations": (_is_int(0), "an integer ≥ 0 (0: no permutation check)", 1000),
    "keep_halves": (lambda v: isinstance(v, bool), "true / false (false: stage 05 deletes the half score files once "
                    "its stability check has read them; a rerun of stage 01 scores them again)", True),
    # ablation controls, uncertainty, benchmarks, k-sweep (stage 04)
    "ablation_modes": (*_list_of("ablation_modes", first="zero"), ["zero"]),  # zero first: the paper's
    "n_uniform_seeds": (_is_int(1), "an integer ≥ 1 (random_uniform seeds at the headline k values, the first of "
                        "random_seeds; one seed elsewhere)", 3),
    "heavy_seeds": (lambda v: v is None or _is_int(1)(v), "null (every seed) or an integer ≥ 1: the first seeds of "
                    "a seeded control that get the heavy metric groups (pass@1, multiple choice) at k_detail", None),
    "every_k": (lambda v: isinstance(v, bool), "true / false: every control with all its seeds, spot_norms and "
                "code_minus_general at every k instead of the headline k values only; likelihood and multiple "
                "choice at every k instead of k_detail only", False),
    "random_extension_k": (_is_list_of(_is_k), f"a list of k in [{K_MIN:g}, 100) (percent) random_uniform may be "
                           "extended to, ascending, until its curve covers the points compared with it",
                           [2.0, 5.0, 10.0, 20.0, 50.0]),
    "matched_bootstrap_samples": (_is_int(100), "an integer ≥ 100 (replicates of the damage-matched bootstrap)",
                                  10000),
    "authors_spot_k": (_is_list_of(_is_k), f"a list of k in [{K_MIN:g}, 100) (percent) at which stage 03 writes and "
                       "stage 04 ablates authors_spot, the authors' damage mask (paper configuration only; [] for "
                       "none)", [0.5, 1.0, 3.0, 5.0]),
    "outlier_counts": (_is_list_of(_is_int(1)), "a list of integers ≥ 1 (top entries of the aggregate)", [1, 10, 100]),
    "cross_ablation_sequences": (_is_int(0), "an integer ≥ 0 (eval sequences per language for the cross-ablation "
                                 "matrix at k_detail; 0: off)", 2),
    "likelihood_items": (_is_int(0), "an integer ≥ 0 (HumanEval / MBPP / multilingual MBPP reference solutions; "
                         "0: off)", 0),
    "likelihood_languages": (lambda v: v is None or _list_of("likelihood_languages", non_empty=False)[0](v),
                             lambda: "null (every code language of the run) or a list (multilingual MBPP) from "
                             + ", ".join(OPTIONS["likelihood_languages"]), None),
    "likelihood_max_len": (_is_int(8), "an integer ≥ 8 (token cap of prompt + reference solution)", 512),
    "mc_benchmarks": (*_list_of("mc_benchmarks", non_empty=False), []),
    "mc_items": (_is_int(1), "an integer ≥ 1 (items per multiple-choice benchmark, a seeded subsample)", 50),
    "mc_batch_size": (_is_int(1), "an integer ≥ 1", 16),
    "generation": (lambda v: isinstance(v, bool), "true / false: HumanEval and MBPP pass@1 (GPU runs)", False),
    "gsm8k_items": (_is_int(0), "an integer ≥ 0 (GSM8K problems, greedy 8-shot exact match; 0: off — for models "
                    "big enough)", 0),
    "generation_items": (lambda v: v is None or _is_int(1)(v), "null (all 164 HumanEval problems) or an integer ≥ 1 "
                         "(a seeded subset)", None),
    "mbpp_items": (lambda v: v is None or _is_int(0)(v), "null (all 500 MBPP problems), 0 (no MBPP) or an integer "
                   "(a seeded subset)", 200),
    "generation_prompt_format": (*_one_of("generation_prompt_format"), "raw"),
    "generation_max_new_tokens": (_is_int(1), "an integer ≥ 1", 512),
    "generation_batch_size": (_is_int(1), "an integer ≥ 1", 8),
    "exec_timeout": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= MAX_TIMEOUT,
                     f"seconds in (0, {MAX_TIMEOUT:g}] (wall clock per executed completion)", 10.0),
    "bootstrap_samples": (_is_int(100), "an integer ≥ 100", 1000),
    # sparse fine-tuning of the spot against other arms (stage 07)
    "tuning": (lambda v: isinstance(v, bool), "true / false: stage 07 trains every arm and evaluates it (false: the "
               "stage writes nothing)", False),
    "tuning_k": (lambda v: _is_list_of(_is_k)(v) and len(v) > 0, "a non-empty list of k of k_grid (percent) at which "
                 "the sparse arms train", [1.0]),
    "tuning_arms": (*_list_of("tuning_arms"), list(DEFAULT_ARMS)),
    "tuning_held_out": (lambda v: v is None or isinstance(v, str), "null (the last of languages) or a language of "
                        "languages left out of the training data (evaluated as held out)", None),
    "tuning_steps": (_is_int(1), "an integer ≥ 1 (optimizer steps of every arm)", 4),
    "tuning_batch_size": (_is_int(1), "an integer ≥ 1 (sequences per step)", 2),
    "tuning_max_len": (lambda v: v is None or _is_int(2)(v), "null (max_len) or an integer in [2, max_len] (tokens "
                       "per training sequence)", None),
    "tuning_lr": (lambda v: isinstance(v, float) and 0 < v < 1, "a learning rate in (0, 1) (the schedule's peak, "
                  "the same for every arm)", 1e-3),
    "tuning_weight_decay": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1,
                            "a weight decay in [0, 1) (AdamW's, on the trained entries only)", 0.0),
    "tuning_seeds": (lambda v: _is_list_of(_is_int(0))(v) and len(v) > 0, "a non-empty list of integers ≥ 0 (each "
                     "seeds the data order, the random arms' masks and LoRA's initialisation)", [0]),
}
DEFAULTS = {k: v[2] for k, v in SCHEMA.items()}


def validate(params: dict) -> dict:
    """Check every key and value; unknown keys and bad values raise one error listing all problems."""
    problems = [f"unknown key {k!r} (known: {', '.join(SCHEMA)})" for k in params if k not in SCHEMA]
    merged = {**DEFAULTS, **{k: v for k, v in params.items() if k in SCHEMA}}
    for key, value in merged.items():
        check, wants = SCHEMA[key][:2]
        if not check(value):
            too_big = isinstance(value, int) and not isinstance(value, bool) and value > MAX_COUNT
            problems.append(f"{key}: {value!r} is not {wants() if callable(wants) else wants}"
                            + (f" (sizes and counts stop at {MAX_COUNT})" if too_big else ""))
    if not problems:
        if merged["general_language"] not in merged["general_eval"]:
            problems.append("general_eval must include general_language")
        outside = [r for r in merged["general_references"] if r not in merged["general_eval"]]
        if outside:
            problems.append(f"general_references {outside} must be evaluated: add them to general_eval")
        if merged["n_uniform_seeds"] > len(merged["random_seeds"]):
            problems.append(f"n_uniform_seeds {merged['n_uniform_seeds']} exceeds the {len(merged['random_seeds'])} "
                            "random_seeds")
        if merged["k_detail"] not in merged["k_grid"]:
            problems.append(f"k_detail {merged['k_detail']} must be one of k_grid {merged['k_grid']}")
        if "julia" in merged["languages"] + merged["unseen_languages"] and merged["corpus_source"] is None:
            problems.append("julia has no offline source: set corpus_source to a folder holding julia/")
        for key in ("languages", "unseen_languages", "general_eval", "general_references", "configurations", "k_grid",
                    "random_seeds", "random_extension_k", "authors_spot_k", "tuning_k", "tuning_arms",
                    "tuning_seeds"):
            repeated = sorted({x for x in merged[key] if merged[key].count(x) > 1}, key=str)
            if repeated:
                problems.append(f"{key}: {repeated} listed more than once")
        if merged["tuning"]:
            problems += _tuning_problems(merged)
        overlap = set(merged["languages"]) & set(merged["unseen_languages"])
        if overlap:
            problems.append(f"languages and unseen_languages overlap: {sorted(overlap)}")
    if problems:
        raise ValueError("invalid parameters:\n  " + "\n  ".join(problems))
    return merged


def _tuning_problems(params: dict) -> list[str]:
    """What stage 07 cannot run with: a tuning_k outside k_grid (stage 03 writes no mask there), a held-out language
    outside languages or the only one, a training length above max_len (its windows would overlap stage 01's)."""
    problems = [f"tuning_k {k} must be one of k_grid {params['k_grid']} (stage 03 writes masks there)"
                for k in params["tuning_k"] if k not in params["k_grid"]]
    held_out = params["tuning_held_out"]
    if held_out is not None and held_out not in params["languages"]:
        problems.append(f"tuning_held_out {held_out!r} must be one of languages {params['languages']}")
    if len(params["languages"]) < 2:
        problems.append("tuning needs two languages at least: one is held out of the training data")
    if (params["tuning_max_len"] or 0) > params["max_len"]:
        problems.append(f"tuning_max_len {params['tuning_max_len']} exceeds max_len {params['max_len']}: training "
                        "windows are stage 01's windows, truncated")
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def load_params(path: str | Path) -> dict:
    """Read and validate a params YAML file (duplicate keys, an empty file and parse errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path}")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: invalid YAML: {e.problem or e.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        raise ValueError(f"{path} is empty: a params file names at least run_name (see params/tiny.yaml)")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of parameter names to values")
    try:
        return validate(data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def resolve_model(spec: str) -> str:
    """The model spec load_model should get: a path (a .gguf, or a folder that exists) relative to the repository
    root made absolute, like corpus_source; names (random:..., embedded, hub ids) unchanged."""
    if spec.startswith("random:"):
        return spec
    path = resolve_path(spec)
    return str(path) if spec.endswith(".gguf") or path.exists() or Path(spec).is_absolute() else spec


def _model_problem(spec: str) -> str | None:
    if spec.startswith("random:"):
        name = spec.removeprefix("random:")
        return None if name in TINY_CONFIGS else f"model: unknown random model {name!r}; accepted: {sorted(TINY_CONFIGS)}"
    if spec in EMBEDDED or spec in ASSEMBLED:
        return None
    path = Path(resolve_model(spec))
    if spec.endswith(".gguf"):
        return None if path.is_file() else f"model: GGUF file {path} not found"
    if path.is_dir():
        return None if (path / "config.json").is_file() else \
            f"model: folder {path} has no config.json (expected a folder written by save_pretrained)"
    if path.is_absolute() and path.exists():
        return f"model: {path} is neither a model folder nor a .gguf file"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec):  # a hub id (resolved when the model loads), or a mistyped path
        if _hub_cached(spec) or hub_reachable():
            return None
        return (f"model: {spec!r} is not a folder here ({resolve_path(spec)} does not exist); as a hub id it needs "
                f"a network, and {HUB_HOST} cannot be reached (nor is it in the local Hugging Face cache)")
    return f"model: {spec!r} is not a local path ({path} does not exist) nor a known name; accepted: {ACCEPTED}"


def _hub_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds `repo_id`'s config.json (loading then needs no network)."""
    from huggingface_hub import try_to_load_from_cache  # deferred: only for hub-id-shaped model specs
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub's host opens (no request is sent): false offline or with HF_HUB_OFFLINE."""
    if any(os.environ.get(flag, "0") not in ("", "0") for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return False
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _device_problem(spec: str) -> str | None:
    """Why torch device `spec` (already parsed by validate) is not usable on this machine, or None."""
    device = torch.device(spec)
    if device.type in ("cpu", "meta"):
        return None
    backend = getattr(torch, device.type, None)
    if device.type == "mps":
        available, count = torch.backends.mps.is_available(), 1
    elif backend is not None and hasattr(backend, "is_available"):
        available = backend.is_available()
        count = backend.device_count() if available and hasattr(backend, "device_count") else 0
    else:
        return f"device: {spec!r}: torch has no {device.type} backend here"
    if not available:
        return f"device: {spec!r}: no {device.type} device is available on this machine (torch {torch.__version__})"
    if device.index is not None and device.index >= count:
        return f"device: {spec!r}: this machine has {count} {device.type} device(s), numbered from 0"
    return None


def corpus_languages(params: dict) -> list[str]:
    """Every language whose corpus a run reads: scored, unseen and general-text ones."""
    return list(dict.fromkeys(params["languages"] + params["unseen_languages"] + params["general_eval"]))


def preflight(params: dict) -> None:
    """Check what the validated params refer to before a run writes anything: the device exists here, the model
    spec resolves (a hub id needs the hub reachable or cached), and a corpus_source folder holds a corpus per
    language (a <language>/ folder or <language>.jsonl). One error lists every problem."""
    problems = [p for p in [_device_problem(params["device"]), _model_problem(params["model"])] if p]
    source = params["corpus_source"]
    if source is not None and not source.startswith("hf:"):
        root = resolve_path(source)
        if not root.exists():
            problems.append(f"corpus_source: {root} does not exist")
        elif root.is_dir():
            missing = [lang for lang in corpus_languages(params)
                       if not (root / lang).is_dir() and not (root / f"{lang}.jsonl").is_file()]
            if missing:
                problems.append(f"corpus_source: {root} has no corpus for {missing} (expected a folder per language)")
    if problems:
        raise ValueError(f"run {params['run_name']!r} cannot start:\n  " + "\n  ".join(problems))


def from_notebook(namespace: dict, names_before: set) -> dict:
    """Validate the parameters a notebook received: names defined since `names_before` that are not private."""
    given = {k: v for k, v in namespace.items() if k not in names_before and not k.startswith("_")}
    return validate(given)
