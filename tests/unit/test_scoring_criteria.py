"""Every criterion against a naive batch-1 computation; scope parts; low-precision models; length cap."""
import pytest
import torch

from conftest import random_sequences
from spot_utils import load_model, score, scoped_parameters
from spot_utils.method.scoring import cap_length, scope_filter


def naive(model, seqs, criterion, include=None):
    """Batch 1, plain autograd, every parameter's gradient folded in by hand after each backward (fp32 sums)."""
    params = scoped_parameters(model, include)
    acc = {n: torch.zeros(p.shape, device=p.device) for n, p in params.items()}
    for s in seqs:
        logits = model(input_ids=s[None], attention_mask=torch.ones_like(s[None])).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits.float(), s[1:])
        for (n, p), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            g, w = g.float(), p.detach().float()
            acc[n] += {"grad_x_weight": g, "abs_grad_x_weight": (g * w).abs(), "fisher": g * g}[criterion]
    if criterion == "grad_x_weight":
        acc = {n: a * params[n].detach().float() for n, a in acc.items()}
    return acc


@pytest.mark.parametrize("criterion", ["grad_x_weight", "abs_grad_x_weight", "fisher"])
def test_criteria_equal_naive_batch1_on_every_architecture(tiny, criterion):
    model, _ = tiny
    seqs = random_sequences(5)
    ref = naive(model, seqs, criterion)
    got = score(model, seqs, criterion=criterion, batch_size=3)
    assert set(got) == set(ref)
    for n in ref:
        assert got[n].dtype == torch.float32 and got[n].device.type == "cpu"
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-7)


def test_magnitude_is_abs_weight_and_needs_no_data(llama):
    model, _ = llama
    got = score(model, [], criterion="magnitude")
    for n, p in scoped_parameters(model).items():
        assert torch.equal(got[n], p.detach().abs())


def test_scope_parts_select_embeddings_lm_head_and_the_rest():
    llama, _ = load_model("random:llama")  # tied embeddings
    qwen, _ = load_model("random:qwen2")  # separate LM head
    names = lambda m, parts: set(scoped_parameters(m, parts))  # noqa: E731
    assert names(llama, ["embeddings"]) == {"model.embed_tokens.weight"}
    assert names(llama, ["lm_head"]) == {"model.embed_tokens.weight"}  # tied: one tensor, counted once
    assert names(qwen, "lm_head") == {"lm_head.weight"}
    assert names(qwen, "other") == {"model.norm.weight"}
    assert names(qwen, "all") == {n for n, _ in qwen.named_parameters()}
    assert names(qwen, ["decoder_layers"]) == set(scoped_parameters(qwen))
    parts = ["decoder_layers", "embeddings", "lm_head", "other"]
    assert names(qwen, parts) == names(qwen, "all")
    with pytest.raises(ValueError, match="unknown scope parts.*'head'"):
        scope_filter(qwen, ["head"])


@pytest.mark.parametrize("criterion", ["grad_x_weight", "fisher"])
def test_embeddings_and_lm_head_scores_equal_naive(criterion):
    model, _ = load_model("random:qwen2")
    seqs = random_sequences(4)
    parts = ["embeddings", "lm_head", "other"]
    ref = naive(model, seqs, criterion, include=parts)
    got = score(model, seqs, criterion=criterion, batch_size=4, include=parts)
    assert set(got) == {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"}
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_model_gets_float32_scores_close_to_float32_and_to_naive(dtype):
    model, _ = load_model("random:llama")
    seqs = random_sequences(6)
    fp32 = score(model, seqs, batch_size=3)
    model.to(dtype)
    half = score(model, seqs, batch_size=3)
    ref = naive(model, seqs, "grad_x_weight")  # the same low-precision model, batch 1, fp32 sums
    assert all(p.dtype == dtype for p in model.parameters())  # the model is left as it was
    for n in fp32:
        assert half[n].dtype == torch.float32
        rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
        assert rel(half[n], fp32[n]) < 0.05, n
        assert rel(half[n], ref[n]) < 0.05, n


def test_float32_accumulators_keep_what_bfloat16_sums_would_lose():
    """Many small per-sequence contributions: an fp32 sum of bf16 gradients beats summing in bf16."""
    model, _ = load_model("random:llama", dtype="bfloat16")
    seqs = random_sequences(24)
    got = score(model, seqs, criterion="fisher")
    ref = naive(model, seqs, "fisher")
    name = "model.layers.0.mlp.down_proj.weight"
    torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-12)


def test_length_cap_chunks_or_drops_and_reports_the_count(llama):
    model, _ = llama
    seqs = [torch.arange(10) % 200, torch.arange(4), torch.arange(9) % 7]
    chunked, n_over = cap_length(seqs, 4, "chunk")
    assert n_over == 2 and [len(s) for s in chunked] == [4, 4, 2, 4, 4, 4]  # 9 -> 4+4+1: the 1-token tail goes
    dropped, n_over = cap_length(seqs, 4, "drop")
    assert n_over == 2 and [len(s) for s in dropped] == [4]
    info = {}
    got = score(model, seqs, max_len=4, overlong="chunk", info=info)
    assert info["overlong"] == 2 and info["sequences"] == 6 and info["tokens"] == 22
    ref = score(model, chunked)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=0, atol=0)
    with pytest.raises(ValueError, match="overlong"):
        score(model, seqs, max_len=4, overlong="truncate")
    with pytest.raises(ValueError, match="empty corpus for 'go'"):
        score(model, [torch.arange(9)], max_len=4, overlong="drop", name="go")
