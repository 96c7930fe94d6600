"""Multiple-choice accuracy (acc, acc_norm) by log-likelihood with EleutherAI lm-eval-harness, offline.

Items ({query, choices, gold}, see spot_utils.evalsets) are written as local JSONL task files with one
YAML config each; the in-memory model is wrapped once in lm-eval's HFLM (the same object, so an ablation
in place shows up on the next call), tasks are built once, and `evaluate` is called per mask. The KV
cache is never used. Per-item correctness comes from lm-eval's logged samples, for our own intervals
and paired tests.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import warnings

import pandas as pd

from ..base.io import write_text

_TEMPLATE = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{query}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{gold}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""
PREFIX = "spot_"


def offline_env(cache_dir: str | Path) -> None:
    """Keep `datasets` and the hub from reaching the network (set before lm_eval / datasets are imported;
    huggingface_hub, already imported by transformers, gets its offline switch set directly)."""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                      HF_HOME=str(Path(cache_dir) / "hf_home"))
    import huggingface_hub.constants  # deferred: huggingface_hub, only for lm-eval
    huggingface_hub.constants.HF_HUB_OFFLINE = True


def write_tasks(benchmarks: dict[str, list[dict]], folder: str | Path) -> list[str]:
    """One JSONL + YAML per benchmark under `folder` (absolute paths); returns the task names."""
    folder = Path(folder).resolve()
    names = []
    for bench, items in benchmarks.items():
        data = folder / f"{bench}.jsonl"
        write_text(data, "".join(json.dumps(dict(query=d["query"], choices=d["choices"], gold=int(d["gold"]))) + "\n"
                                 for d in items))
        write_text(folder / f"{bench}.yaml", _TEMPLATE.format(task=PREFIX + bench, data=json.dumps(str(data))))
        names.append(PREFIX + bench)
    return names


class MultipleChoice:
    """lm-eval multiple-choice evaluation of one in-memory model on local task files.

    mc = MultipleChoice(model, tokenizer, {"arc_easy": items, ...}, folder)
    items = mc.item_scores()  # one row per (benchmark, item): acc, acc_norm
    """

    def __init__(self, model, tokenizer, benchmarks: dict[str, list[dict]], folder: str | Path, batch_size: int = 16):
        offline_env(folder)
        from lm_eval.models.huggingface import HFLM  # deferred: lm-eval (~0.5 GB), only for multiple choice
        from lm_eval.tasks import TaskManager, get_task_dict  # deferred: lm-eval (~0.5 GB), only for multiple choice

        names = write_tasks(benchmarks, folder)
        use_cache = model.config.use_cache
        self.lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        model.config.use_cache = use_cache
        self.model = model
        self.chance = {b: sum(1 / len(d["choices"]) for d in items) / len(items) for b, items in benchmarks.items()}
        self.sizes = {b: len(items) for b, items in benchmarks.items()}
        with warnings.catch_warnings():  # get_task_dict is deprecated in 0.4.13 but still what evaluate() takes
            warnings.simplefilter("ignore", DeprecationWarning)
            self.tasks = get_task_dict(names, TaskManager(include_path=str(Path(folder).resolve()),
                                                          include_defaults=False))

    def item_scores(self) -> pd.DataFrame:
        """Rows subset (benchmark), item (its index in the task file), acc, acc_norm and the log-likelihood of
        every choice, for the model as it is now."""
        from lm_eval.evaluator import evaluate  # deferred: lm-eval (~0.5 GB), only for multiple choice
        use_cache = self.model.config.use_cache
        self.model.config.use_cache = False
        try:
            out = evaluate(self.lm, self.tasks, log_samples=True, verbosity="ERROR")
        finally:
            self.model.config.use_cache = use_cache
        rows = []
        for task, samples in out["samples"].items():
            for s in samples:
                rows.append(dict(subset=task.removeprefix(PREFIX), item=int(s["doc_id"]), acc=float(s["acc"]),
                                 acc_norm=float(s["acc_norm"]), logliks=[float(r[0]) for r in s["filtered_resps"]]))
        return pd.DataFrame(rows).sort_values(["subset", "item"], kind="stable").reset_index(drop=True)
