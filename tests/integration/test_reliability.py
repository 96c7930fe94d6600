"""Names that cannot escape the run folder, a lock no deleted file bypasses, every checkable problem refused before
the lock (one message), files a reader sees written atomically (papermill replaced by a fake stage)."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from spot_utils import pipeline
from spot_utils.analysis import rows as metrics
from spot_utils.base.run_lock import RunLocked, lock_path
from spot_utils.experiment import params as P
from spot_utils.experiment.params import load_params, validate
from test_run_guards import HOLD, ROOT, dirs, fake_papermill, params_file  # noqa: F401 (dirs: a fixture)

CORPUS = "corpus_source: tests/fixtures/corpus\n"


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", ".hidden", "-x", "x" * 65, "x" * 300, "", "naïve"])
def test_run_names_that_could_leave_runs_are_refused_before_anything_is_written(dirs, monkeypatch, name):
    fake_papermill(monkeypatch)
    path = params_file(dirs, f"run_name: {json.dumps(name)}\n{CORPUS}")
    with pytest.raises(ValueError, match=r"run_name: .* is not a folder name: 1-64 characters"):
        load_params(path)
    with pytest.raises(ValueError, match="run_name"):
        validate({"run_name": name})
    with pytest.raises(ValueError, match="run_name"):
        pipeline.run(path)
    assert not (dirs / "runs").exists() and not (dirs / "reports").exists() and not (dirs / "index.html").exists()


@pytest.mark.parametrize("name", ["a", "run-1.b_2", "x" * 64, "9"])
def test_folder_names_are_accepted(name):
    assert validate({"run_name": name})["run_name"] == name


def test_deleting_the_lock_file_does_not_let_a_second_run_start(dirs, monkeypatch):
    fake_papermill(monkeypatch)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(dirs / "runs" / "guard")], stdout=subprocess.PIPE,
                              text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        lock_path(dirs / "runs" / "guard").unlink()  # what a user clearing "a stale lock" does
        with pytest.raises(RunLocked, match="'guard' is in use"):
            pipeline.run(params_file(dirs, f"run_name: guard\n{CORPUS}"))
        assert not (dirs / "reports" / "guard").exists()
    finally:
        holder.kill()
        holder.wait()
    pipeline.run(params_file(dirs, f"run_name: guard\n{CORPUS}"))  # free once its holder is gone
    assert not lock_path(dirs / "runs" / "guard").exists()  # the holder record goes with the lock


def test_every_problem_checkable_before_the_lock_is_listed_in_one_message(dirs, monkeypatch):
    fake_papermill(monkeypatch)
    text = (f"run_name: bad\n{CORPUS}device: not-a-device\nn_score_sequences: {10**20}\n"
            "k_grid: [1.0e-300]\nk_detail: 1.0e-300\nexec_timeout: .inf\nmax_len: 1e9\n")
    with pytest.raises(ValueError) as error:
        pipeline.run(params_file(dirs, text))
    message = str(error.value)
    for expected in ("device: 'not-a-device' is not a torch device", "n_score_sequences: 100000000000000000000 is "
                     "not an integer ≥ 1 (sizes and counts stop at 2147483647)", "k_grid: [1e-300] is not",
                     "k_detail: 1e-300 is not", "exec_timeout: inf is not seconds in (0, 86400]",
                     "max_len: '1e9' is not an integer ≥ 2"):
        assert expected in message, message
    assert not (dirs / "runs").exists()


@pytest.mark.skipif(torch.cuda.device_count() >= 100, reason="a machine with 100 GPUs has cuda:99")
def test_a_device_this_machine_lacks_is_refused_before_the_lock(dirs, monkeypatch):
    fake_papermill(monkeypatch)
    with pytest.raises(ValueError, match=r"run 'dev' cannot start:\n  device: 'cuda:99': (no cuda device is "
                                         r"available|this machine has \d cuda device)"):
        pipeline.run(params_file(dirs, f"run_name: dev\n{CORPUS}device: cuda:99\n"))
    assert not (dirs / "runs").exists()
    assert P._device_problem("cpu") is None


def test_a_missing_local_looking_model_is_refused_offline_and_named(dirs, monkeypatch):
    fake_papermill(monkeypatch)
    monkeypatch.setattr(P, "hub_reachable", lambda: False)
    with pytest.raises(ValueError, match=r"model: 'models/does-not-exist' is not a folder here \(.*models/"
                                         r"does-not-exist does not exist\); as a hub id it needs a network"):
        pipeline.run(params_file(dirs, f"run_name: m\n{CORPUS}model: models/does-not-exist\n"))
    assert not (dirs / "runs").exists()


def test_hub_reachable_is_false_when_offline_is_set(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert P.hub_reachable() is False


def test_metrics_csv_is_written_atomically_beside_metrics_json(tmp_path, monkeypatch):
    rows = [dict(mask_kind="none", k_percent=0.0, subset="python", metric="loss", value=1.5),
            dict(mask_kind="spot", k_percent=1.0, subset="python", metric="loss", value=2.5)]
    metrics.write_metrics(tmp_path / "metrics.json", rows)
    written = pd.read_csv(tmp_path / "metrics.csv")
    assert list(written.value) == [1.5, 2.5] and list(written.columns) == list(metrics.FIELDS)
    before = (tmp_path / "metrics.csv").read_bytes()

    def broken_to_csv(self, *args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(pd.DataFrame, "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        metrics.write_metrics(tmp_path / "metrics.json", rows[:1])
    assert (tmp_path / "metrics.csv").read_bytes() == before  # the reader's file is whole: old or new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "metrics.json"]


def test_no_reader_file_is_written_by_to_csv_onto_its_path():
    """Every table a stage writes goes through io.write_text (atomic), never DataFrame.to_csv(<path>)."""
    import re
    offenders = []
    for path in [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("spot_utils/**/*.py")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if re.search(r"\.to_csv\((?!\s*index=|\s*\))", line):
                offenders.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not offenders, offenders
