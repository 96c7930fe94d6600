import pytest
import torch

from conftest import random_sequences
from spot_utils import score, scoped_parameters


def reference_grad_x_weight(model, seqs):
    """The reference way: batch 1, θ ⊙ ∇L(x) added up after every backward, with plain autograd."""
    params = scoped_parameters(model)
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in seqs:
        logits = model(input_ids=s[None]).logits[0, :-1]
        loss = torch.nn.functional.cross_entropy(logits, s[1:])
        grads = torch.autograd.grad(loss, list(params.values()))
        for (n, p), g in zip(params.items(), grads):
            acc[n] += p.detach() * g
    return acc


def test_batched_scores_equal_batch1_reference(tiny):
    model, _ = tiny
    seqs = random_sequences(7)
    ref = reference_grad_x_weight(model, seqs)
    for batch_size in (1, 3, 8):
        got = score(model, seqs, batch_size=batch_size)
        assert set(got) == set(ref)
        for n in ref:
            torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6)


def test_default_scope_is_exactly_the_decoder_layers(tiny):
    model, _ = tiny
    names = set(score(model, random_sequences(2), criterion="magnitude"))
    layer_names = {n for n, _ in model.named_parameters() if ".layers." in n}
    assert names == layer_names
    assert not any("embed" in n or "lm_head" in n for n in names)


def test_stale_grads_do_not_leak_and_state_is_restored(llama):
    model, _ = llama
    seqs = random_sequences(4)
    clean = score(model, seqs)
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 123.0)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.model.embed_tokens.weight.requires_grad_(False)
    flags["model.embed_tokens.weight"] = False
    dirty = score(model, seqs)
    for n in clean:
        torch.testing.assert_close(dirty[n], clean[n], rtol=0, atol=0)
    assert model.training
    assert all((p.grad == 123.0).all() for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


@pytest.mark.parametrize("criterion", ["abs_grad_x_weight", "fisher"])
def test_per_sequence_criteria_match_naive_loop(llama, criterion):
    model, _ = llama
    seqs = random_sequences(5)
    params = scoped_parameters(model)
    ref = {n: torch.zeros_like(p) for n, p in params.items()}
    for s in seqs:
        loss = torch.nn.functional.cross_entropy(model(input_ids=s[None]).logits[0, :-1], s[1:])
        for (n, p), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            ref[n] += (p.detach() * g).abs() if criterion == "abs_grad_x_weight" else g * g
    got = score(model, seqs, criterion=criterion, batch_size=4)
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-7)


def test_checkpoint_resume_gives_the_same_scores(llama, tmp_path):
    model, _ = llama
    seqs = random_sequences(8)
    full = score(model, seqs, batch_size=2)
    ckpt = tmp_path / "checkpoint.safetensors"
    calls = {"n": 0}

    def interrupt_third_batch(module, args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("interrupted")
    handle = model.model.register_forward_pre_hook(interrupt_third_batch)
    with pytest.raises(RuntimeError, match="interrupted"):
        score(model, seqs, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2)
    handle.remove()
    assert ckpt.exists()
    resumed = score(model, seqs, batch_size=2, name="go", checkpoint_dir=tmp_path, checkpoint_every=2)
    for n in full:
        torch.testing.assert_close(resumed[n], full[n], rtol=1e-6, atol=1e-9)
    assert not ckpt.exists()  # a finished job removes its checkpoint


def test_nan_gradient_names_language_and_sequence(llama):
    model, _ = llama
    seqs = random_sequences(4)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"'rust'.*sequence 0"):
        score(model, seqs, batch_size=2, name="rust")


def test_bad_inputs_are_named(llama):
    model, _ = llama
    with pytest.raises(ValueError, match="empty corpus for 'go'"):
        score(model, [], name="go")
    with pytest.raises(ValueError, match="sequence 1"):
        score(model, [torch.arange(5), torch.arange(1)], name="go")
    with pytest.raises(ValueError, match="unknown criterion"):
        score(model, random_sequences(2), criterion="saliency")
