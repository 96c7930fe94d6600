import copy

import pytest
import torch

from conftest import random_sequences
from spot_utils.method.tuning import (SparseAdamW, lora_count, lora_model, lora_modules, matched_lora_rank,
                                      scheduled_lr, sparse_parameters, train, trainable_count)
from spot_utils.method.scoring import clean_name


def _masks(model, fraction=0.05, seed=0):
    """Random masks over the decoder layers' parameters (norms included) and none elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    return {clean_name(n): torch.rand(p.shape, generator=gen) < fraction
            for n, p in model.named_parameters() if ".layers." in n}


def _batches(n_steps, size=3, seed=0):
    seqs = random_sequences(n_steps * size, seed=seed)
    return [seqs[i * size:(i + 1) * size] for i in range(n_steps)]


def test_unselected_entries_stay_bit_identical_after_many_steps(llama):
    model, _ = llama
    masks = _masks(model)
    start = {clean_name(n): p.detach().clone() for n, p in model.named_parameters()}
    optimizer = SparseAdamW(sparse_parameters(model, masks), masks, lr=1e-2, weight_decay=0.1)
    losses = train(model, optimizer, _batches(1) * 20, peak_lr=1e-2)  # one batch, again and again: its loss falls
    assert losses[-1] < losses[0]
    moved = 0
    for n, p in model.named_parameters():
        n = clean_name(n)
        mask = masks.get(n, torch.zeros(p.shape, dtype=torch.bool))
        assert torch.equal(p.detach()[~mask], start[n][~mask]), n
        moved += int((p.detach()[mask] != start[n][mask]).sum())
    assert moved > 0.9 * sum(int(m.sum()) for m in masks.values())


def _masked_dense_adamw(params, masks, grads, state, step, lr, betas, eps, decay):
    """The naive reference: full-shape moments, the AdamW update computed everywhere and applied where selected."""
    b1, b2 = betas
    for n, p in params.items():
        m, v = state.setdefault(n, (torch.zeros_like(p), torch.zeros_like(p)))
        g = grads[n] * masks[n]
        m.mul_(b1).add_((1 - b1) * g)
        v.mul_(b2).add_((1 - b2) * g * g)
        update = (m / (1 - b1 ** step)) / ((v / (1 - b2 ** step)).sqrt() + eps)
        new = p * (1 - lr * decay) - lr * update
        p.copy_(torch.where(masks[n], new, p))


def test_sparse_adamw_equals_masked_dense_and_torch_adamw_on_the_gathered_entries(llama):
    model, _ = llama
    masks = _masks(model, fraction=0.1)
    reference = {n: p.detach().clone() for n, p in sparse_parameters(model, masks).items()}
    gathered = {n: torch.nn.Parameter(p[masks[n]].clone()) for n, p in reference.items()}
    lr, betas, eps, decay = 3e-3, (0.9, 0.95), 1e-8, 0.1
    params = sparse_parameters(model, masks)
    optimizer = SparseAdamW(params, masks, lr=lr, betas=betas, eps=eps, weight_decay=decay)
    torch_adamw = torch.optim.AdamW(gathered.values(), lr=lr, betas=betas, eps=eps, weight_decay=decay, foreach=False)
    gen = torch.Generator().manual_seed(1)
    state = {}
    for step in range(1, 31):
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in params.items()}
        for n, p in params.items():
            p.grad = grads[n].clone()
            gathered[n].grad = grads[n][masks[n]].clone()
        optimizer.step()
        torch_adamw.step()
        with torch.no_grad():
            _masked_dense_adamw(reference, masks, grads, state, step, lr, betas, eps, decay)
    for n, p in params.items():
        torch.testing.assert_close(p.detach(), reference[n], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p.detach()[masks[n]], gathered[n].detach(), rtol=1e-6, atol=1e-7)


def test_optimizer_state_is_the_selected_entries_only(llama):
    model, _ = llama
    masks = _masks(model, fraction=0.01)
    masks["model.layers.0.mlp.down_proj.weight"][:] = False  # a tensor without selected entries gets no state
    params = sparse_parameters(model, masks)
    optimizer = SparseAdamW(params, masks)
    selected = sum(int(m.sum()) for m in masks.values())
    assert optimizer.n_selected == selected
    assert sum(len(v) for v in optimizer.exp_avg.values()) == sum(len(v) for v in optimizer.exp_avg_sq.values()) \
        == selected
    assert optimizer.state_bytes() == selected * (8 + 4 + 4)
    assert "model.layers.0.mlp.down_proj.weight" not in params
    assert trainable_count(model) == sum(p.numel() for p in params.values())


def test_lora_count_matches_the_formula_and_the_rank_is_the_closest(llama):
    model, _ = llama
    modules = lora_modules(model)
    assert len(modules) == 2 * 7
    per_rank = sum(m.in_features + m.out_features for m in modules.values())
    for target in (1, per_rank // 2, 3 * per_rank + 10, 5 * per_rank - 1):
        rank = matched_lora_rank(model, target)
        assert rank == min(range(1, 20), key=lambda r: (abs(r * per_rank - target), r))
    rank = matched_lora_rank(model, 3 * per_rank + 10)
    adapted = lora_model(copy.deepcopy(model), rank)
    assert trainable_count(adapted) == lora_count(model, rank) == rank * per_rank


def test_lora_trains_only_its_adapters(llama):
    model, _ = llama
    adapted = lora_model(copy.deepcopy(model), 2)
    before = {n: p.detach().clone() for n, p in adapted.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in adapted.parameters() if p.requires_grad], lr=1e-2)
    train(adapted, optimizer, _batches(3), peak_lr=1e-2)
    assert all(torch.equal(p.detach(), before[n]) for n, p in adapted.named_parameters() if not p.requires_grad)


@pytest.mark.parametrize("steps", [1, 10, 37])
def test_schedule_warms_up_then_decays_to_its_floor(steps):
    lrs = [scheduled_lr(s, steps, 1.0) for s in range(steps)]
    assert max(lrs) == pytest.approx(1.0) and all(0.1 - 1e-9 <= x <= 1.0 for x in lrs)
    peak = lrs.index(max(lrs))
    assert lrs[:peak + 1] == sorted(lrs[:peak + 1]) and lrs[peak:] == sorted(lrs[peak:], reverse=True)


def test_benchmark_runs_on_the_tiny_model(capsys):
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sparse_tuning.py"
    spec = importlib.util.spec_from_file_location("sparse_tuning_benchmark", path)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    benchmark.main(["--tiny", "--seq-len", "16"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["0.1", "1", "5"]
    assert all(float(r[4]) < 0.2 for r in rows)  # sparse state: a small fraction of dense masked AdamW's
