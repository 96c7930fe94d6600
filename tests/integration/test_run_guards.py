"""The pipeline's guards, with papermill replaced by a fake stage: checks before any write, the run lock,
complete executed notebooks only, and a manifest that marks failed and stale stages."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from spot_utils import pipeline

from spot_utils.base import run_files as runs
from spot_utils.experiment.params import load_params, preflight
from spot_utils.base.run_lock import RunLocked, run_lock

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.setattr(runs, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(pipeline, "render_html", lambda nb: nb)  # nbconvert is not what is tested here
    return tmp_path


def fake_papermill(monkeypatch, fail=(), seen=None):
    """execute_notebook that writes a one-cell notebook and the stage's record, or raises for stages in `fail`."""
    import papermill

    def execute(src, out, parameters, **kw):
        stage = Path(src).stem
        if seen is not None:
            seen.append((stage, sorted(p.name for p in Path(out).parent.iterdir())))
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_code_cell(f"# {stage}"))
        nbformat.write(nb, out)
        if stage in fail:
            raise RuntimeError(f"{stage} broke")
        (runs.RUNS_DIR / parameters["run_name"]).mkdir(parents=True, exist_ok=True)
        (runs.RUNS_DIR / parameters["run_name"] / f"{stage}.json").write_text(json.dumps({"stage": stage}))
    monkeypatch.setattr(papermill, "execute_notebook", execute)


def params_file(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_failed_stage_is_recorded_and_later_stages_marked_stale(dirs, monkeypatch):
    p = params_file(dirs, "run_name: guard\ncorpus_source: tests/fixtures/corpus\n")
    fake_papermill(monkeypatch)
    pipeline.run(p)
    manifest = json.loads((dirs / "reports/guard/manifest.json").read_text())
    assert {s: r["status"] for s, r in manifest["stages"].items()} == dict.fromkeys(pipeline.STAGES, "ok")
    fake_papermill(monkeypatch, fail={"02_aggregation"})
    with pytest.raises(RuntimeError, match="02_aggregation broke"):
        pipeline.run(p)
    manifest = json.loads((dirs / "reports/guard/manifest.json").read_text())
    status = {s: r["status"] for s, r in manifest["stages"].items()}
    assert status == {"01_scoring": "ok", "02_aggregation": "failed", "03_selection": "stale",
                      "04_ablation": "stale", "05_overlap": "stale", "06_explore": "stale",
                      "07_tuning": "stale"}
    assert "02_aggregation broke" in manifest["stages"]["02_aggregation"]["error"]
    assert (dirs / "reports/guard/02_aggregation.ipynb").is_file()  # the failing notebook is kept
    index = (dirs / "reports/index.html").read_text()  # the index and the pages show it
    assert "02_aggregation failed" in index and "02_aggregation broke" in index and "05_overlap stale" in index
    failed = (dirs / "reports/guard/02_aggregation.html").read_text()
    assert "02_aggregation failed in its last run" in failed and "02_aggregation broke" in failed
    assert "03_selection is stale" in (dirs / "reports/guard/03_selection.html").read_text()
    first = (dirs / "reports/guard/01_scoring.html").read_text()
    assert re.search(r'href="02_aggregation.html">02_aggregation <span class="spot-status">\(failed\)', first)
    # rerunning one stage alone leaves the stages after it stale
    fake_papermill(monkeypatch)
    pipeline.run(p, stages=["02_aggregation"])
    manifest = json.loads((dirs / "reports/guard/manifest.json").read_text())
    assert manifest["stages"]["02_aggregation"]["status"] == "ok"
    assert manifest["stages"]["03_selection"]["status"] == "stale"
    index = (dirs / "reports/index.html").read_text()
    assert "02_aggregation failed" not in index and "03_selection stale" in index
    assert "is stale" not in (dirs / "reports/guard/02_aggregation.html").read_text()


def test_executed_notebook_appears_only_when_complete(dirs, monkeypatch):
    p = params_file(dirs, "run_name: guard\ncorpus_source: tests/fixtures/corpus\n")
    seen = []
    fake_papermill(monkeypatch, seen=seen)
    pipeline.run(p, stages=["01_scoring", "02_aggregation"])
    # while 02 ran, its output notebook was not at its final path (01's, complete, was)
    assert "01_scoring.ipynb" in seen[1][1] and "02_aggregation.ipynb" not in seen[1][1]
    report = dirs / "reports/guard"
    assert sorted(p.name for p in report.glob("*.ipynb")) == ["01_scoring.ipynb", "02_aggregation.ipynb"]
    assert not list(report.glob(".*"))


@pytest.mark.parametrize("text, match", [
    ("run_name: bad\nmodel: no/such/folder\n", "not a local path"),
    ("run_name: bad\nmodel: tests\n", "has no config.json"),
    ("run_name: bad\nmodel: missing.gguf\n", "GGUF file .* not found"),
    ("run_name: bad\ncorpus_source: tests/fixtures/corpus\nlanguages: [go, julia]\n", r"no corpus for \['julia'\]"),
    ("run_name: bad\ncorpus_source: no_such_corpus\n", "does not exist"),
    ("run_name: bad\nlanguages: [go, rust, go]\n", r"languages: \['go'\] listed more than once"),
])
def test_bad_params_fail_before_anything_is_written(dirs, monkeypatch, text, match):
    fake_papermill(monkeypatch)
    with pytest.raises(ValueError, match=match):
        pipeline.run(params_file(dirs, text))
    assert not (dirs / "runs").exists() and not (dirs / "reports").exists()


def test_hub_ids_and_relative_model_folders_are_accepted(tmp_path, monkeypatch):
    from spot_utils.experiment import params as P
    monkeypatch.setattr(P, "hub_reachable", lambda: True)  # a hub id is accepted where the hub can be reached
    preflight(load_params(params_file(tmp_path, "run_name: ok\nmodel: HuggingFaceTB/SmolLM2-135M\n")))
    folder = ROOT / "tests" / f"_model_{os.getpid()}"
    folder.mkdir()
    try:
        (folder / "config.json").write_text("{}")
        relative = f"tests/{folder.name}"
        preflight(load_params(params_file(tmp_path, f"run_name: ok\nmodel: {relative}\n")))
        monkeypatch.chdir(ROOT / "notebooks")  # where the stage notebooks run: still the repository's folder
        assert P.resolve_model(relative) == str(folder)
    finally:
        (folder / "config.json").unlink()
        folder.rmdir()


@pytest.mark.parametrize("text, match", [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("run_name: a\nseed: 1\nrun_name: b\n", r"p.yaml:3:1: .*'run_name' given twice \(first on line 1\)"),
    ("run_name: a\nk_grid: [1, 2\n", r"p.yaml:3:1: invalid YAML"),
    ("run_name: a\n  seed: 1\n", r"p.yaml:2:7: invalid YAML"),
])
def test_params_file_errors_name_file_and_line(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_params(params_file(tmp_path, text))


HOLD = """
import sys, time
from spot_utils.base.run_lock import run_lock
with run_lock(sys.argv[1], params_file="other.yaml"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_of_the_same_name_fails_at_once_naming_the_holder(dirs, monkeypatch):
    fake_papermill(monkeypatch)
    holder = _holder(dirs / "runs" / "guard")
    try:
        began = time.monotonic()
        with pytest.raises(RunLocked, match=rf"'guard' is in use: held by process {holder.pid} .*other.yaml"):
            pipeline.run(params_file(dirs, "run_name: guard\ncorpus_source: tests/fixtures/corpus\n"))
        assert time.monotonic() - began < 5
        assert not (dirs / "reports" / "guard").exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = _holder(tmp_path / "run")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with run_lock(tmp_path / "run", params_file="mine.yaml") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLocked, match=f"process {os.getpid()}"):  # and it holds against others
            with run_lock(tmp_path / "run"):
                pass


def test_stage_05_leaves_out_another_run_it_cannot_verify(tmp_path):
    import torch
    from spot_utils.method.masks import save_masks
    from spot_utils.report.cross_model import cross_model
    masks = {"model.layers.0.mlp.up_proj.weight": torch.rand(8, 4, generator=torch.Generator().manual_seed(0)) > 0.5}
    for run in ("mine", "good", "broken"):
        save_masks(tmp_path / run / "masks/spot/k1_global.safetensors", masks, {"model": run})
    path = tmp_path / "broken/masks/spot/k1_global.safetensors"
    path.write_bytes(path.read_bytes()[:-1] + bytes([path.read_bytes()[-1] ^ 0xFF]))
    with pytest.warns(UserWarning, match="run 'broken' left out .*corrupt"):
        summary, _ = cross_model(["mine", "good", "broken"], 1.0, tmp_path, tmp_path / "reports")
    assert list(summary.run) == ["mine", "good"]
    with pytest.raises(ValueError, match="corrupt"):  # this run's own masks are never skipped
        cross_model(["broken", "good"], 1.0, tmp_path, tmp_path / "reports")
