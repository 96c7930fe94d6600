"""Faults: a SIGKILLed run resumes to the same scores; NaN stops with a named error; corrupt files are caught."""
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import killed_at_batch, random_sequences
from spot_utils import load_model, score
from spot_utils.base.run_files import load_tensors, save_tensors

ROOT = Path(__file__).resolve().parents[2]
CHILD = textwrap.dedent("""
    import sys, time, torch
    sys.path[:0] = [{root!r}, {tests!r}]
    from conftest import random_sequences
    from spot_utils import load_model, score
    torch.set_num_threads(1)
    model, _ = load_model("random:llama")
    model.model.register_forward_pre_hook(lambda module, args: time.sleep(0.3))  # slow enough to be killed
    score(model, random_sequences(12), batch_size=2, name="go", checkpoint_dir={ckpt!r}, checkpoint_every=2)
    print("finished")
""")


def checkpoint_position(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["state"])["position"]


def test_sigkilled_run_resumes_to_the_same_scores(tmp_path):
    ckpt = tmp_path / "ckpt"
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), ckpt=str(ckpt)))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = ckpt / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    while not path.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(child.pid, signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, f"the child ended before it was killed: {err.decode()[-2000:]}"
    position = checkpoint_position(path)
    assert 0 < position < 12

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the child's thread count: identical float sums
    try:
        model, _ = load_model("random:llama")
        info = {}
        resumed = score(model, random_sequences(12), batch_size=2, name="go", checkpoint_dir=ckpt,
                        checkpoint_every=2, info=info)
        full = score(model, random_sequences(12), batch_size=2, name="go")
    finally:
        torch.set_num_threads(threads)
    assert info["resumed_from"] == position
    for n in full:
        assert torch.equal(resumed[n], full[n]), n  # bit-identical: same sums in the same order
    assert not path.exists()


def test_checkpoint_of_another_job_is_refused(llama, tmp_path):
    model, _ = llama
    seqs = random_sequences(6)
    _interrupted_checkpoint(model, seqs, tmp_path, batch_size=2)
    other = [s.flip(0) for s in seqs]  # same count and lengths, other tokens
    with pytest.raises(ValueError, match="belongs to another job"):
        score(model, other, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2)


def test_nan_stops_naming_language_and_sequence_and_leaves_only_a_finite_checkpoint(tmp_path):
    model, _ = load_model("random:qwen2")  # untied: a NaN embedding row touches only the sequences using it
    seqs = random_sequences(8, vocab=200)
    seqs[5][3] = 255  # only sequence 5 uses token 255, whose embedding is NaN
    with torch.no_grad():
        model.model.embed_tokens.weight[255] = float("nan")
    for criterion, batch_size in (("grad_x_weight", 2), ("fisher", 1)):
        with pytest.raises(FloatingPointError, match=r"'ruby'.*sequence 5\b"):
            score(model, seqs, criterion=criterion, batch_size=batch_size, name="ruby",
                  checkpoint_dir=tmp_path, checkpoint_every=2)
        path = tmp_path / "checkpoint.safetensors"
        assert checkpoint_position(path) == 4  # the last one before the bad sequence
        with safe_open(str(path), framework="pt") as f:
            assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys())
        path.unlink()
    assert all(p.grad is None for p in model.parameters())


def test_nan_only_in_a_gradient_is_caught(llama):
    model, _ = llama
    model.model.layers[1].mlp.down_proj.weight.register_hook(lambda g: g.masked_fill(g.abs() > -1, float("inf")))
    with pytest.raises(FloatingPointError, match=r"'go', one of sequences 0, 1, 2, 3;"):
        score(model, random_sequences(4), batch_size=2, name="go")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_truncated_or_corrupt_score_file_is_detected(tmp_path, damage):
    path = tmp_path / "scores" / "go.safetensors"
    save_tensors(path, {"w": torch.arange(1000, dtype=torch.float32)}, {"language": "go"})
    assert load_tensors(path)[1] == {"language": "go"}
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-7] ^= 0xFF  # one bit pattern inside the tensor data: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_tensors(path)


def _interrupted_checkpoint(model, seqs, ckpt, **kw):
    """Score until the second batch, then stop as a kill would: a checkpoint at position 2 is left."""
    with killed_at_batch(model, 2):
        score(model, seqs, name="go", checkpoint_dir=ckpt, checkpoint_every=2, **kw)
    assert checkpoint_position(ckpt / "checkpoint.safetensors") == 2


def test_checkpoint_of_another_same_shaped_model_is_refused(tmp_path):
    seqs = random_sequences(6)
    model_a, _ = load_model("random:llama")
    _interrupted_checkpoint(model_a, seqs, tmp_path, batch_size=2)
    model_b, _ = load_model("random:llama")
    with torch.no_grad():  # same config and shapes, other weights
        model_b.model.layers[0].mlp.up_proj.weight.mul_(1.5)
    with pytest.raises(ValueError, match=r"another job \(model: '[0-9a-f]{12}…' in the checkpoint"):
        score(model_b, seqs, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2)
    info = {}
    score(model_a, seqs, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2, info=info)
    assert info["resumed_from"] == 2  # the model that wrote it still resumes


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_checkpoint_is_named_discarded_and_rescored_from_its_start(tmp_path, damage):
    seqs = random_sequences(6)
    model, _ = load_model("random:llama")
    _interrupted_checkpoint(model, seqs, tmp_path, batch_size=2)
    path = tmp_path / "checkpoint.safetensors"
    data = bytearray(path.read_bytes())
    if damage == "flip":  # three bytes inside the tensor data: the file still parses, the sums are wrong
        for i in (-5, -401, -2001):
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))
    info = {}
    warned = rf"checkpoint {re.escape(str(path))} discarded: .*truncated or corrupt.*'go' from its start"
    with pytest.warns(RuntimeWarning, match=warned):
        got = score(model, seqs, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2, info=info)
    assert info["resumed_from"] == 0
    full = score(model, seqs, batch_size=2, name="go")
    assert all(torch.equal(got[n], full[n]) for n in full)
    assert not path.exists()


@pytest.mark.parametrize("change, match", [
    (dict(dtype=torch.bfloat16), "dtype: 'float32' in the checkpoint, 'bfloat16' now"),
    (dict(batch_size=1), "batch_size: 2 in the checkpoint, 1 now"),
    (dict(max_len=8), "max_len: None in the checkpoint, 8 now"),
    (dict(criterion="abs_grad_x_weight"), "criterion: 'grad_x_weight' in the checkpoint"),
])
def test_checkpoint_refuses_another_dtype_batching_or_criterion(tmp_path, change, match):
    seqs = random_sequences(6)
    model, _ = load_model("random:llama")
    _interrupted_checkpoint(model, seqs, tmp_path, batch_size=2)
    if "dtype" in change:
        model = model.to(change.pop("dtype"))
    kw = dict(dict(batch_size=2), **change)
    with pytest.raises(ValueError, match=match):
        score(model, seqs, name="go", checkpoint_dir=tmp_path, checkpoint_every=2, **kw)
