"""Data-parallel scoring over two CPU processes (gloo) equals the single-process result."""
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from conftest import random_sequences
from spot_utils import load_model, score
from spot_utils.experiment import distributed
from spot_utils.experiment.distributed import load_sharded, score_distributed, score_sharded, shard

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
        on_rank0 = score_distributed(model, seqs, batch_size=2, name="go", everywhere=False)
        if rank == 0:
            save_file(on_rank0, f"{out_dir}/rank0_only.safetensors")
        else:
            assert on_rank0 is None
        seqs[4][1] = 255  # a NaN embedding row reached only by sequence 4, which rank 0 scores
        with torch.no_grad():
            model.model.embed_tokens.weight[255] = float("nan")
        try:
            score_distributed(model, seqs, batch_size=2, name="go")
        except (FloatingPointError, RuntimeError) as e:
            (out_dir / f"error.rank{rank}.txt").write_text(f"{type(e).__name__}: {e}")
    finally:
        dist.destroy_process_group()


def _fsdp_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        loads = []
        full_load = distributed.load_model
        distributed.load_model = lambda *a, **k: loads.append(a) or full_load(*a, **k)
        model, _ = load_sharded("random:qwen2", "float32", torch.device("cpu"))
        distributed.load_model = full_load
        (out_dir / f"full_loads.rank{rank}.txt").write_text(str(len(loads)))
        seqs = random_sequences(7, vocab=200)  # 7 capped sequences over 2 ranks, batches of 2: rank 1 runs out first
        for criterion in ("grad_x_weight", "magnitude"):
            scores = score_sharded(model, seqs, criterion=criterion, batch_size=2, name="go", max_len=16)
            if rank == 0:
                save_file(scores, f"{out_dir}/fsdp_{criterion}.safetensors")
            else:
                assert scores is None
        calls = {"n": 0}

        def stop(module, args):  # interrupted at the third step, after the checkpoint of the second
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        handle = model.model.register_forward_pre_hook(stop)
        try:
            score_sharded(model, seqs, batch_size=1, name="go", max_len=16, checkpoint_dir=out_dir / "ckpt",
                          checkpoint_every=4)
        except KeyboardInterrupt:
            pass
        handle.remove()
        dist.barrier()
        weight = model.model.layers[1].mlp.up_proj.weight.to_local()  # another model: one entry of rank 1's shard
        kept = weight.clone()
        with torch.no_grad():
            if rank == 1:
                weight[0, 0] += 1.0
        try:
            score_sharded(model, seqs, batch_size=1, name="go", max_len=16, checkpoint_dir=out_dir / "ckpt",
                          checkpoint_every=4)
        except ValueError as e:
            (out_dir / f"fsdp_other_model.rank{rank}.txt").write_text(str(e))
        with torch.no_grad():
            weight.copy_(kept)
        info = {}
        resumed = score_sharded(model, seqs, batch_size=1, name="go", max_len=16, checkpoint_dir=out_dir / "ckpt",
                                checkpoint_every=4, info=info)
        if rank == 0:
            save_file(resumed, f"{out_dir}/fsdp_resumed.safetensors")
            (out_dir / "resumed_from.txt").write_text(str(info["resumed_from"]))
        seqs[4][1] = 255  # a NaN embedding row reached only by sequence 4
        weight = model.model.embed_tokens.weight  # sharded by rows: set row 255 where it lives
        start = rank * -(-weight.shape[0] // world)
        with torch.no_grad():
            if start <= 255 < start + len(weight.to_local()):
                weight.to_local()[255 - start] = float("nan")
        try:
            score_sharded(model, seqs, batch_size=2, name="go")
        except FloatingPointError as e:
            (out_dir / f"fsdp_error.rank{rank}.txt").write_text(str(e))
        try:
            score_sharded(model, seqs, criterion="fisher", name="go")
        except ValueError as e:
            (out_dir / f"fsdp_fisher.rank{rank}.txt").write_text(str(e))
    finally:
        dist.destroy_process_group()


def test_fsdp_over_two_gloo_processes_equals_one_process(tmp_path):
    mp.spawn(_fsdp_worker, args=(2, str(tmp_path / "init"), tmp_path), nprocs=2, join=True)
    model, _ = load_model("random:qwen2")
    seqs = random_sequences(7, vocab=200)
    single = score(model, seqs, batch_size=2, max_len=16)
    got = load_file(tmp_path / "fsdp_grad_x_weight.safetensors")
    assert set(got) == set(single)
    for n in single:
        torch.testing.assert_close(got[n], single[n], rtol=1e-5, atol=1e-8)
    magnitude = load_file(tmp_path / "fsdp_magnitude.safetensors")
    assert all(torch.equal(magnitude[n], t) for n, t in score(model, seqs, criterion="magnitude").items())
    resumed = load_file(tmp_path / "fsdp_resumed.safetensors")
    assert (tmp_path / "resumed_from.txt").read_text() == "4"  # 2 steps of 1 sequence on each of 2 ranks
    for n in single:
        torch.testing.assert_close(resumed[n], single[n], rtol=1e-5, atol=1e-8)
    # one full host copy: rank 0 loaded the model, rank 1 built it on the meta device and received its shards
    assert [(tmp_path / f"full_loads.rank{r}.txt").read_text() for r in range(2)] == ["1", "0"]
    for r in range(2):  # the checkpoint of the same-shaped other model was refused on both ranks, and kept
        assert "belongs to another job (model:" in (tmp_path / f"fsdp_other_model.rank{r}.txt").read_text()
        assert "'go', sequence 4" in (tmp_path / f"fsdp_error.rank{r}.txt").read_text()
        assert "use the ddp strategy" in (tmp_path / f"fsdp_fisher.rank{r}.txt").read_text()


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
    rank0 = load_file(tmp_path / "rank0_only.safetensors")
    assert all(torch.equal(rank0[n], t) for n, t in load_file(tmp_path / "grad_x_weight.rank0.safetensors").items())
    errors = [(tmp_path / f"error.rank{r}.txt").read_text() for r in range(2)]
    assert errors[0].startswith("FloatingPointError") and "'go', sequence 4" in errors[0]
    assert errors[1].startswith("RuntimeError") and "failed on another rank" in errors[1]


def test_empty_corpus_is_refused_before_any_collective(llama):
    model, _ = llama
    with pytest.raises(ValueError, match="empty corpus for 'go'"):
        score_distributed(model, [], name="go")


@pytest.mark.parametrize("strategy, criterion", [("ddp", "fisher"), ("fsdp", "grad_x_weight")])
def test_cli_writes_the_files_of_stage_01_and_a_rerun_keeps_them(tmp_path, monkeypatch, strategy, criterion):
    """`python -m spot_utils.distributed params.yaml` with one gloo process, the corpus replaced by fixed sequences."""
    import socket
    import sys
    import types

    import yaml

    import spot_utils
    from spot_utils.experiment import distributed
    from spot_utils.base import run_files as runs
    from spot_utils.base.io import read_json
    from spot_utils.base.run_files import load_tensors
    from spot_utils.experiment.scoring_stage import split_halves

    corpus = {lang: random_sequences(3, seed=i) for i, lang in enumerate(["go", "rust", "english"])}
    fake_stage = types.SimpleNamespace(
        sequences=lambda P, tok, langs, split, n, max_len: {lang: corpus[lang] for lang in langs})
    monkeypatch.setattr(distributed, "stage", fake_stage)
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path / "runs")
    params = tmp_path / "dp.yaml"
    params.write_text(yaml.safe_dump(dict(run_name="dp", model="random:llama", languages=["go", "rust"],
                                          criterion=criterion, batch_size=2, checkpoint_every=2, max_len=16)))

    def run():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                         LOCAL_RANK="0").items():
            monkeypatch.setenv(k, v)
        distributed.main([str(params), "--strategy", strategy])
        return read_json(tmp_path / "runs" / "dp" / "01_scoring_distributed.json")

    first = run()
    assert first["strategy"] == strategy and all(row["kept"] == [] for row in first["scored"])
    model, _ = load_model("random:llama")
    P = dict(run_name="dp")
    for lang, seqs in corpus.items():
        got, manifest = load_tensors(runs.scores_path(P, lang))
        assert manifest["language"] == lang and manifest["criterion"] == criterion
        ref = score(model, seqs, criterion=criterion, max_len=16)
        for n in ref:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-5, atol=1e-8)
        for half, part in zip(runs.HALVES, split_halves(seqs)):  # stage 05's stability needs the halves
            got, manifest = load_tensors(runs.scores_path(P, lang, half))
            assert manifest["half"] == half
            torch.testing.assert_close(got, score(model, part, criterion=criterion, max_len=16), rtol=1e-5, atol=1e-8)
    assert not any((tmp_path / "runs" / "dp" / "checkpoints").rglob("*.safetensors"))
    before = {p: p.read_bytes() for p in (tmp_path / "runs" / "dp" / "scores").rglob("*.safetensors")}
    second = run()
    assert all(row["kept"] == list(runs.HALVES) for row in second["scored"])
    assert before == {p: p.read_bytes() for p in (tmp_path / "runs" / "dp" / "scores").rglob("*.safetensors")}
