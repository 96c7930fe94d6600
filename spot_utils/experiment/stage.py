"""Glue shared by the stage notebooks: parameters, seeds, threads, the model and the sequences of a run."""
from __future__ import annotations

import json
from pathlib import Path
import platform
import random
import subprocess
import time

import numpy as np
import pandas as pd
import torch

from ..base.io import write_json
from ..base import paths
from ..base.paths import shown
from ..base.run_files import run_dir, stage_record_path
from ..data import corpus
from ..data.models import load_model
from .params import from_notebook, resolve_model
from .stages import STAGES


def check_inputs(params: dict, stage: str) -> None:
    """Fail before any work when a stage this one reads from has not finished for the run (its record in
    runs/<run>/<stage>.json is written last), naming the stage to run first; ValueError for a stage not in the table."""
    missing = [s for s in STAGES.pick(stage).needs if not (run_dir(params) / f"{s}.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"stage {stage} of run '{params['run_name']}' reads the outputs of {', '.join(missing)}, which are missing "
            f"from {shown(run_dir(params))}: run notebooks/{missing[0]}.ipynb with run_name = '{params['run_name']}' first "
            f"(or `python -m spot_utils.pipeline <params file> --stages {' '.join(missing)}`)")


def commit_of(folder: Path) -> str | None:
    """HEAD commit of the checkout at `folder`, with '+dirty' when tracked files outside reports/ (which runs
    rewrite) have changes; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                               cwd=folder, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def package_origin() -> dict:
    """Where the imported spot_utils lives and the commit of its checkout (what a manifest records as the code
    that ran: a venv's editable install may point at another clone than the one a stage runs in)."""
    return {"path": str(paths.PACKAGE_ROOT / "spot_utils"), "commit": commit_of(paths.PACKAGE_ROOT)}


def check_package(repository: Path | None = None) -> None:
    """Refuse to run when the imported spot_utils is not the package of `repository` (default: the checkout
    holding the working directory): its code would run under the other clone's commit and paths."""
    repository = (repository or paths.REPO_ROOT).resolve()
    if paths.is_repository(repository) and repository != paths.PACKAGE_ROOT.resolve():
        raise RuntimeError(
            f"this run is in the repository {repository}, but Python imports spot_utils from "
            f"{paths.PACKAGE_ROOT / 'spot_utils'} (another clone, e.g. a shared venv's editable install): its code "
            f"would run under this repository's commit. Use this clone's environment, or install it into this one "
            f"with `pip install -e {repository} --no-deps`")


def start(namespace: dict, names_before: set, stage: str) -> dict:
    """Validate the notebook's parameters, check that the imported spot_utils is this repository's and that
    earlier stages finished, seed everything, set threads; print what a reader needs.

    Args:
        namespace: the notebook's globals(); names_before: the names defined before its parameters cell.
        stage: the stage's name in the stage table.

    Returns:
        The validated parameters, with the stage's name and start time for `finish`.
    """
    params = from_notebook(namespace, names_before)
    check_package()
    check_inputs(params, stage)
    pd.set_option("display.max_colwidth", None)  # tables show whole labels (the checks' wording)
    if params["threads"]:
        torch.set_num_threads(params["threads"])
    random.seed(params["seed"])
    np.random.seed(params["seed"])
    torch.manual_seed(params["seed"])
    run_dir(params).mkdir(parents=True, exist_ok=True)
    params["_stage"], params["_started"] = stage, time.perf_counter()
    params["_origin"] = package_origin()  # the code that runs is the code imported now, whatever commits follow
    print(f"stage {stage} · run {params['run_name']} · model {params['model']} · seed {params['seed']} · "
          f"torch {torch.__version__} · {torch.get_num_threads()} threads · device {params['device']}")
    return params


def finish(params: dict, **info) -> None:
    """Record what this stage saw (device, threads, seconds, input hashes) for the run manifest."""
    record = dict(stage=params["_stage"], seconds=round(time.perf_counter() - params["_started"], 1),
                  device=params["device"], threads=torch.get_num_threads(), torch=torch.__version__,
                  python=platform.python_version(), sequences=params.get("_sequences", {}),
                  spot_utils=params.get("_origin") or package_origin(), **info)
    write_json(stage_record_path(params, params['_stage']), json.loads(json.dumps(record, default=str)))
    print(f"stage {params['_stage']} finished in {record['seconds']} s")


def model_for(params: dict, dtype: str | None = None):
    """(model, tokenizer) of the run, in its dtype (or `dtype`) on its device (a relative model path from the
    repository root)."""
    return load_model(resolve_model(params["model"]), dtype=dtype or params["dtype"], device=params["device"])


def sequences(params: dict, tokenizer, languages, split: str, n: int, max_len: int) -> dict[str, list[torch.Tensor]]:
    """n token sequences of at most max_len tokens per language from the run's corpus `split`; what was drawn
    (sampling, files used, short files left out, corpus hash) goes into the stage record (`finish`)."""
    out = {}
    for lang in languages:
        out[lang] = corpus.load_sequences(lang, split, tokenizer, n=n, max_len=max_len, seed=params["seed"],
                                          source=corpus.language_source(params["corpus_source"], lang),
                                          eval_fraction=params["eval_fraction"])
        params.setdefault("_sequences", {})[f"{split}/{lang}"] = out[lang].info
    return out
