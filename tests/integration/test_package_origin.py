"""Two clones sharing one venv: a stage refuses to run when the spot_utils it imported is not the package of the
repository it runs in, and the manifest records the path and commit of the package that did run."""
import json
import os
import subprocess
import sys

import pytest

from spot_utils import pipeline
from spot_utils.base import paths
from spot_utils.base.io import read_json
from spot_utils.experiment import stage
from test_run_guards import ROOT, dirs, fake_papermill, params_file  # noqa: F401 (dirs: a fixture)


def _other_clone(tmp_path):
    """A second checkout of the project (what paths.is_repository recognises), without its own install."""
    clone = tmp_path / "clone"
    (clone / "spot_utils" / "base").mkdir(parents=True)
    (clone / "spot_utils" / "base" / "paths.py").write_text("")
    (clone / "notebooks").mkdir()
    return clone


def test_a_stage_kernel_in_another_clone_refuses_the_shared_venvs_package(tmp_path):
    clone = _other_clone(tmp_path)
    code = ("from spot_utils.experiment import stage\n"
            "stage.start({'run_name': 'twin', 'corpus_source': None}, set(), '01_scoring')\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SPOT_RUNS_DIR")}
    env["PYTHONPATH"] = str(ROOT)  # what the venv's editable install does: this checkout's package, from anywhere
    done = subprocess.run([sys.executable, "-c", code], cwd=clone / "notebooks", capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode != 0
    assert (f"this run is in the repository {clone}, but Python imports spot_utils from {ROOT / 'spot_utils'}"
            in done.stderr), done.stderr[-2000:]
    assert not (clone / "runs").exists()  # refused before the run folder is made


def test_the_pipeline_refuses_before_the_lock_and_names_both_folders(dirs, monkeypatch):
    clone = _other_clone(dirs)
    monkeypatch.setattr(paths, "REPO_ROOT", clone)
    fake_papermill(monkeypatch)
    with pytest.raises(RuntimeError, match=rf"repository {clone}, but Python imports spot_utils from"):
        pipeline.run(params_file(dirs, f"run_name: twin\ncorpus_source: {ROOT / 'tests/fixtures/corpus'}\n"))
    assert not (dirs / "runs").exists()


def test_in_its_own_repository_a_stage_runs_and_the_manifest_names_the_package(dirs, monkeypatch):
    stage.check_package(ROOT)  # this checkout's own package: accepted
    fake_papermill(monkeypatch)
    out = pipeline.run(params_file(dirs, "run_name: own\ncorpus_source: tests/fixtures/corpus\n"),
                       stages=["01_scoring"])
    manifest = read_json(out / "manifest.json")
    assert manifest["spot_utils"] == {"path": str(ROOT / "spot_utils"), "commit": stage.commit_of(ROOT)}
    assert manifest["spot_utils"]["commit"].split("+")[0] == subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_the_stage_record_names_the_package_the_kernel_imported(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "stage_record_path", lambda params, name: tmp_path / f"{name}.json")
    stage.finish({"_stage": "01_scoring", "_started": 0.0, "device": "cpu"})
    record = json.loads((tmp_path / "01_scoring.json").read_text())
    assert record["spot_utils"]["path"] == str(paths.PACKAGE_ROOT / "spot_utils")
    assert record["spot_utils"]["commit"] == stage.commit_of(paths.PACKAGE_ROOT)


def test_the_stage_record_names_the_commit_at_the_stages_start(tmp_path, monkeypatch):
    """A commit made while a stage runs (a working tree in use) is not the code the stage imported."""
    monkeypatch.setattr(stage, "stage_record_path", lambda params, name: tmp_path / f"{name}.json")
    monkeypatch.setattr(stage, "check_inputs", lambda params, name: None)
    monkeypatch.setattr(stage, "run_dir", lambda params: tmp_path / "run")
    head = {"commit": "at-start"}
    monkeypatch.setattr(stage, "commit_of", lambda root: head["commit"])
    params = stage.start({"run_name": "own", "corpus_source": None}, set(), "01_scoring")
    head["commit"] = "at-finish"  # committed while the stage ran
    stage.finish(params)
    assert json.loads((tmp_path / "01_scoring.json").read_text())["spot_utils"]["commit"] == "at-start"
