"""Data-parallel scoring over two CPU processes (gloo) equals the single-process result."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from conftest import random_sequences
from spot_utils import load_model, score
from spot_utils.distributed import score_distributed, shard

CRITERIA = ("grad_x_weight", "fisher")


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, _ = load_model("random:qwen2")
        seqs = random_sequences(7, vocab=200)
        for criterion in CRITERIA:
            scores = score_distributed(model, seqs, criterion=criterion, batch_size=2, name="go")
            save_file(scores, f"{out_dir}/{criterion}.rank{rank}.safetensors")
        seqs[4][1] = 255  # a NaN embedding row reached only by sequence 4, which rank 0 scores
        with torch.no_grad():
            model.model.embed_tokens.weight[255] = float("nan")
        try:
            score_distributed(model, seqs, batch_size=2, name="go")
        except (FloatingPointError, RuntimeError) as e:
            (out_dir / f"error.rank{rank}.txt").write_text(f"{type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()


def test_shards_cover_every_sequence_once():
    seqs = list(range(11))
    shards = [shard(seqs, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == seqs and [len(s) for s in shards] == [4, 4, 3]


def test_two_gloo_processes_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    model, _ = load_model("random:qwen2")
    for criterion in CRITERIA:
        single = score(model, random_sequences(7, vocab=200), criterion=criterion, batch_size=2)
        ranks = [load_file(tmp_path / f"{criterion}.rank{r}.safetensors") for r in range(2)]
        for n in single:
            for got in ranks:  # every rank holds the all-reduced result
                torch.testing.assert_close(got[n], single[n], rtol=1e-5, atol=1e-8)
    errors = [(tmp_path / f"error.rank{r}.txt").read_text() for r in range(2)]
    assert errors[0].startswith("FloatingPointError") and "'go', sequence 4" in errors[0]
    assert errors[1].startswith("RuntimeError") and "failed on another rank" in errors[1]


def test_empty_corpus_is_refused_before_any_collective(llama):
    model, _ = llama
    with pytest.raises(ValueError, match="empty corpus for 'go'"):
        score_distributed(model, [], name="go")


def test_cli_scores_every_language_and_rank0_writes_checked_files(tmp_path, monkeypatch):
    """`python -m spot_utils.distributed params.yaml` with one gloo process, the corpus replaced by fixed sequences."""
    import socket
    import sys
    import types

    import yaml

    import spot_utils
    from spot_utils import distributed, runs
    from spot_utils.runs import load_tensors

    corpus = {lang: random_sequences(3, seed=i) for i, lang in enumerate(["go", "rust", "english"])}
    fake_stage = types.SimpleNamespace(
        sequences=lambda P, tok, langs, split, n, max_len: {lang: corpus[lang] for lang in langs})
    monkeypatch.setitem(sys.modules, "spot_utils.stage", fake_stage)
    monkeypatch.setattr(spot_utils, "stage", fake_stage, raising=False)
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0").items():
        monkeypatch.setenv(k, v)
    params = tmp_path / "dp.yaml"
    params.write_text(yaml.safe_dump(dict(run_name="dp", model="random:llama", languages=["go", "rust"],
                                          criterion="fisher", batch_size=2, checkpoint_every=2, max_len=16)))
    distributed.main([str(params)])
    model, _ = load_model("random:llama")
    for lang, seqs in corpus.items():
        got, manifest = load_tensors(tmp_path / "runs" / "dp" / "scores" / f"{lang}.safetensors")
        assert manifest["language"] == lang and manifest["criterion"] == "fisher"
        ref = score(model, seqs, criterion="fisher", max_len=16)
        for n in ref:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-6, atol=1e-10)
    assert not any((tmp_path / "runs" / "dp" / "checkpoints").rglob("*.safetensors"))
