"""Stage 01's loop over languages, shared by the 01_scoring notebook and `python -m spot_utils.distributed`.

Each language is scored in two disjoint halves (runs.HALVES) whose sum is its full score; stage 05 compares the
halves' spots for stability. Every file is written as soon as it is complete (half_a, half_b, then the full score,
each with the job in its manifest), so a rerun keeps every file that is complete, verified (runs.verify_tensors)
and of the same job (the model's weights by content, not its name), resumes an interrupted half from its
checkpoint (runs.checkpoint_dir), and says why it scores again a file it finds but cannot keep.
"""
from __future__ import annotations

import time
from typing import Callable

from ..base import run_files as runs
from ..method.scoring import CRITERIA, corpus_fingerprint, model_fingerprint, score


def split_halves(sequences: list) -> tuple[list, list]:
    """Two disjoint halves of a language's score sequences (first ⌈n/2⌉, the rest); score each, add for the full."""
    cut = (len(sequences) + 1) // 2
    return list(sequences[:cut]), list(sequences[cut:])


def job(params: dict, lang: str, sequences: list, model_id: str) -> dict:
    """What a score file was computed from: a file is reused only when its manifest holds all of it.

    model_id: the model's content fingerprint (scoring.model_fingerprint): other weights under the same model
    path are another job.
    """
    return dict(language=lang, criterion=params["criterion"], model=model_id, dtype=params["dtype"],
                score_include=params["score_include"], max_len=params["max_len"], overlong=params["overlong"],
                sequences=len(sequences), corpus=corpus_fingerprint(sequences))


def unusable(path, expected: dict) -> str | None:
    """Why a score file cannot be kept for the job `expected` (None: it can; "missing" when there is none)."""
    try:
        manifest = runs.verify_tensors(path)
    except FileNotFoundError:
        return "missing"
    except ValueError as e:
        return str(e)
    differ = sorted(k for k, v in expected.items() if manifest.get(k) != v)
    return f"it was computed for another {', '.join(differ)}" if differ else None


def score_languages(params: dict, model, sequences_by_lang: dict[str, list], scorer: Callable = score,
                    writer: bool = True, agree: Callable[[bool], bool] = bool, log: Callable = print,
                    model_id: str | None = None) -> list[dict]:
    """Score every language's sequences in two halves and write runs.scores_path(params, lang[, half]).

    scorer: `spot_utils.score` or a function with its arguments (e.g. a distributed one); writer: whether this
    process writes the files (rank 0 of a distributed run); agree(flag): the flag every process acts on (rank 0's,
    broadcast, in a distributed run: every process must skip or score the same halves); model_id: the model's
    content fingerprint (default: scoring.model_fingerprint(model), taken once; a sharded model needs one over
    all ranks). Returns one timing row per language (seconds 0 and `kept` when its files were already complete).
    """
    dtype = params["score_dtype"]
    model_id = model_id or model_fingerprint(model)
    timing = []
    for lang, seqs in sequences_by_lang.items():
        about = job(params, lang, seqs, model_id)
        row = dict(language=lang, sequences=len(seqs), tokens=sum(len(s) for s in seqs), kept=[], resumed_from={},
                   per_sequence=CRITERIA.pick(params["criterion"]).per_sequence)
        start = time.perf_counter()
        for half, part in zip(runs.HALVES, split_halves(seqs)):
            path = runs.scores_path(params, lang, half)
            why = unusable(path, dict(about, half=half)) if writer else None
            if agree(writer and why is None):
                row["kept"].append(half)
                continue
            if why not in (None, "missing"):
                log(f"{lang} ({half}): scoring again, the stored {path.name} is not kept: {why}")
            info = {}
            scores = scorer(model, part, criterion=params["criterion"], batch_size=params["batch_size"],
                            include=params["score_include"], name=f"{lang} ({half})",
                            checkpoint_dir=runs.checkpoint_dir(params, lang, half),
                            checkpoint_every=params["checkpoint_every"], max_len=params["max_len"],
                            overlong=params["overlong"], info=info, other_checkpoint="restart")
            row["resumed_from"][half] = info.get("resumed_from", 0)
            if writer:
                runs.save_tensors(path, scores, dict(about, half=half, model_spec=params["model"]), dtype)
            del scores
        full = runs.scores_path(params, lang)
        if writer and not (len(row["kept"]) == 2 and runs.is_complete(full, **about)):
            # the full score is the sum of the halves as stored: the same whether or not a half was resumed
            total = runs.load_tensors(runs.scores_path(params, lang, runs.HALVES[0]))[0]
            for n, t in runs.iter_tensors(runs.scores_path(params, lang, runs.HALVES[1])):
                total[n].add_(t)
            runs.save_tensors(full, total, dict(about, model_spec=params["model"]), dtype)
            del total
        row["seconds"] = round(time.perf_counter() - start, 1)
        row["tokens_per_s"] = round(row["tokens"] / row["seconds"]) if len(row["kept"]) < 2 and row["seconds"] else None
        log(f"{lang}: {summary(row)}")
        timing.append(row)
    return timing


def summary(row: dict) -> str:
    """One readable line for a timing row of score_languages."""
    if len(row["kept"]) == 2:
        return f"kept from an earlier run ({row['tokens']:,} tokens)"
    line = f"{row['sequences']} sequences, {row['tokens']:,} tokens in {row['seconds']:.0f} s"
    if row["tokens_per_s"]:
        line += f" ({row['tokens_per_s']:,} tokens/s)"
    resumed = {half: n for half, n in row["resumed_from"].items() if n}
    return line + "".join(f"; {half} resumed after {n} sequences" for half, n in resumed.items())
