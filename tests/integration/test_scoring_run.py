"""Stage 01's loop over languages: the files it writes, and a run interrupted between or within languages resumes
to files equal to an uninterrupted run's, bit for bit, without re-scoring what was complete."""
import pytest
import torch
from safetensors import safe_open

from conftest import killed_at_batch, random_sequences
from spot_utils import load_model, score
from spot_utils.base import run_files as runs
from spot_utils.experiment.params import validate
from spot_utils.experiment.scoring_stage import score_languages, split_halves

LANGS = ["go", "rust", "english"]  # 6 sequences each: halves of 3, batches of 2 -> 2 forward passes per half


def params(run):
    return validate(dict(run_name=run, model="random:llama", languages=["go", "rust"], batch_size=2,
                         checkpoint_every=2, max_len=16))


def corpus():
    return {lang: random_sequences(6, seed=i) for i, lang in enumerate(LANGS)}


def files(run):
    return {p.relative_to(runs.run_dir(run)): p.read_bytes()
            for p in sorted((runs.run_dir(run) / "scores").rglob("*.safetensors"))}


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    return tmp_path / "runs"


def test_writes_full_and_half_scores_equal_to_score(runs_dir, llama):
    model, _ = llama
    P, seqs = params("r"), corpus()
    timing = score_languages(P, model, seqs, log=lambda *a: None)
    assert [t["language"] for t in timing] == LANGS and all(t["kept"] == [] for t in timing)
    for lang, s in seqs.items():
        halves = [score(model, h, batch_size=2, max_len=16) for h in split_halves(s)]
        for half, ref in zip(runs.HALVES, halves):
            got, manifest = runs.load_tensors(runs.scores_path(P, lang, half))
            assert manifest["half"] == half and manifest["sequences"] == 6
            assert all(torch.equal(got[n], ref[n]) for n in ref)
        full, manifest = runs.load_tensors(runs.scores_path(P, lang))
        assert manifest["language"] == lang and "half" not in manifest
        assert all(torch.equal(full[n], halves[0][n] + halves[1][n]) for n in full)
        torch.testing.assert_close(full, score(model, s, batch_size=2, max_len=16), rtol=1e-5, atol=1e-8)
    assert not any((runs_dir / "r" / "checkpoints").rglob("*.safetensors"))


@pytest.mark.parametrize("stop_at, kept, resumed", [
    (5, {"go": ["half_a", "half_b"]}, {}),        # between languages: go complete, nothing of rust yet
    (6, {"go": ["half_a", "half_b"]}, {"rust": {"half_a": 2}}),   # within rust's first half, after a checkpoint
    (8, {"go": ["half_a", "half_b"], "rust": ["half_a"]}, {"rust": {"half_b": 2}}),  # within rust's second half
])
def test_interrupted_run_resumes_to_the_same_files(runs_dir, llama, stop_at, kept, resumed):
    model, _ = llama
    score_languages(params("whole"), model, corpus(), log=lambda *a: None)
    calls = {"n": 0}

    def stop(module, args):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt  # as a kill would, at the start of forward pass `stop_at`
    handle = model.model.register_forward_pre_hook(stop)
    with pytest.raises(KeyboardInterrupt):
        score_languages(params("cut"), model, corpus(), log=lambda *a: None)
    calls["n"] = -10**9  # the rerun is never stopped, but still counted
    timing = score_languages(params("cut"), model, corpus(), log=lambda *a: None)
    handle.remove()
    assert files("cut") == files("whole")  # every score file, bit for bit (tensors and manifests)
    for row in timing:
        assert row["kept"] == kept.get(row["language"], []), row
        for half, position in resumed.get(row["language"], {}).items():
            assert row["resumed_from"][half] == position, row
    n_kept = sum(map(len, kept.values()))
    assert calls["n"] + 10**9 == 2 * (6 - n_kept) - sum(p // 2 for r in resumed.values() for p in r.values())
    assert not any((runs_dir / "cut" / "checkpoints").rglob("*.safetensors"))


def test_files_of_another_job_or_damaged_are_scored_again(runs_dir, llama):
    model, _ = llama
    P = params("r")
    score_languages(P, model, corpus(), log=lambda *a: None)
    before = files("r")
    path = runs.scores_path(P, "go", "half_b")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))  # damaged: fails its hash check
    other = corpus()
    other["rust"] = [s.flip(0) for s in other["rust"]]  # same sizes, other tokens: another job
    timing = {t["language"]: t for t in score_languages(P, model, other, log=lambda *a: None)}
    assert timing["go"]["kept"] == ["half_a"] and timing["rust"]["kept"] == [] and \
        timing["english"]["kept"] == ["half_a", "half_b"]
    after = files("r")
    assert after[path.relative_to(runs.run_dir(P))] == before[path.relative_to(runs.run_dir(P))]
    rust = runs.scores_path(P, "rust").relative_to(runs.run_dir(P))
    assert after[rust] != before[rust]


def test_other_weights_under_the_same_model_folder_are_scored_again(runs_dir, tmp_path):
    folder = tmp_path / "model"
    model, tokenizer = load_model("random:llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    P = dict(params("r"), model=str(folder))
    seqs = {"go": corpus()["go"]}
    score_languages(P, load_model(str(folder))[0], seqs, log=lambda *a: None)
    _interrupt_within_half_a(P, load_model(str(folder))[0], seqs)  # a checkpoint of these weights is left
    with torch.no_grad():  # the folder overwritten with other weights (×1.5), same path, config and shapes
        for p in model.parameters():
            p.mul_(1.5)
    model.save_pretrained(folder)
    lines = []
    with pytest.warns(RuntimeWarning, match="another job \\(model: .*from its start"):
        timing = score_languages(P, load_model(str(folder))[0], seqs, log=lines.append)
    assert timing[0]["kept"] == [] and timing[0]["resumed_from"] == {"half_a": 0, "half_b": 0}
    assert any("half_b" in line and "scoring again" in line and "another model" in line for line in lines), lines
    fresh = load_model(str(folder))[0]
    for half, part in zip(runs.HALVES, split_halves(seqs["go"])):
        got, manifest = runs.load_tensors(runs.scores_path(P, "go", half))
        assert manifest["model_spec"] == str(folder)
        ref = score(fresh, part, batch_size=2, max_len=16)
        assert all(torch.equal(got[n], ref[n]) for n in ref)
    timing = score_languages(P, fresh, seqs, log=lambda *a: None)  # the same weights again: kept
    assert timing[0]["kept"] == list(runs.HALVES)


def _interrupt_within_half_a(P, model, seqs):
    """Remove half_a's scores and rescore it until the second batch, which is stopped as a kill would stop it."""
    runs.scores_path(P, "go", runs.HALVES[0]).unlink()
    with killed_at_batch(model, 2):
        score_languages(P, model, seqs, log=lambda *a: None)
    assert (runs.checkpoint_dir(P, "go", runs.HALVES[0]) / "checkpoint.safetensors").is_file()


def test_bfloat16_score_files(runs_dir, llama):
    model, _ = llama
    P = dict(params("bf"), score_dtype="bfloat16")
    score_languages(P, model, {"go": corpus()["go"]}, log=lambda *a: None)
    exact = [score(model, h, batch_size=2, max_len=16) for h in split_halves(corpus()["go"])]
    halves = [runs.load_tensors(runs.scores_path(P, "go", h)) for h in runs.HALVES]
    full, manifest = runs.load_tensors(runs.scores_path(P, "go"))
    assert manifest["storage_dtype"] == "bfloat16"
    with safe_open(str(runs.scores_path(P, "go")), framework="pt") as f:
        assert {f.get_tensor(n).dtype for n in f.keys()} == {torch.bfloat16}
    for n in full:
        assert halves[0][0][n].dtype == torch.float32
        assert torch.equal(halves[0][0][n], exact[0][n].bfloat16().float())
        assert torch.equal(full[n], (halves[0][0][n] + halves[1][0][n]).bfloat16().float())
