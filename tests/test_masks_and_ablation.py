import pytest
import torch

from conftest import random_sequences
from spot_utils import (ablated, load_masks, magnitude_per_tensor, mask_and, mask_count, mask_minus, mask_or,
                        random_per_tensor, random_uniform, save_masks, scoped_parameters, select_top_k)
from spot_utils.evaluation import item_losses


def test_masks_round_trip_bit_exactly(tmp_path):
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(3, 13, generator=gen) > 0.5, "b": torch.rand(7, generator=gen) > 0.9,
             "c": torch.zeros(2, 2, dtype=torch.bool)}
    save_masks(tmp_path / "m.safetensors", masks, {"k_percent": 1.0, "model": "x"})
    back, manifest = load_masks(tmp_path / "m.safetensors")
    assert all(torch.equal(back[n], masks[n]) for n in masks)
    assert manifest["k_percent"] == 1.0 and manifest["counts"]["a"] == int(masks["a"].sum())


def test_corrupt_mask_file_is_detected(tmp_path):
    path = tmp_path / "m.safetensors"
    save_masks(path, {"a": torch.ones(100, dtype=torch.bool)}, {})
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="cannot read masks"):
        load_masks(path)


def test_mask_algebra_hand_case():
    a = {"x": torch.tensor([True, True, False, False])}
    b = {"x": torch.tensor([True, False, True, False]), "y": torch.tensor([True])}
    assert mask_and(a, b)["x"].tolist() == [True, False, False, False] and mask_and(a, b)["y"].tolist() == [False]
    assert mask_or(a, b)["x"].tolist() == [True, True, True, False] and mask_or(a, b)["y"].tolist() == [True]
    assert mask_minus(a, b)["x"].tolist() == [False, True, False, False]
    assert mask_count(b) == 3


@pytest.mark.parametrize("mode", ["zero", "mean", "noise"])
def test_ablation_restores_bit_exactly(tiny, mode):
    model, _ = tiny
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    params = scoped_parameters(model)
    masks = select_top_k({n: p.detach().abs() for n, p in params.items()}, 5.0)
    with ablated(model, masks, mode=mode, seed=3):
        changed = any(not torch.equal(p, before[n]) for n, p in model.named_parameters())
        if mode == "zero":
            assert all((params[n].detach()[m] == 0).all() for n, m in masks.items())
    assert changed
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_noise_is_reproducible_from_its_seed(llama):
    model, _ = llama
    params = scoped_parameters(model)
    masks = random_per_tensor({n: torch.rand(p.shape) > 0.9 for n, p in params.items()}, seed=0)

    def noised(seed):
        with ablated(model, masks, mode="noise", seed=seed):
            return {n: params[n].detach().clone() for n in masks}
    a, b, c = noised(1), noised(1), noised(2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


def test_mismatched_mask_is_rejected_before_anything_changes(llama):
    model, _ = llama
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    good = {"model.layers.0.mlp.up_proj.weight": torch.ones(128, 64, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"model.layers.1.mlp.up_proj.weight.*\(3, 3\).*\(128, 64\)"):
        with ablated(model, {**good, "model.layers.1.mlp.up_proj.weight": torch.ones(3, 3, dtype=torch.bool)}):
            pass
    with pytest.raises(KeyError, match="no_such"):
        with ablated(model, {**good, "no_such.weight": torch.ones(1, dtype=torch.bool)}):
            pass
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_empty_mask_leaves_metrics_bit_identical(llama):
    model, _ = llama
    subsets = {"go": random_sequences(3)}
    base = item_losses(model, subsets)
    empty = {n: torch.zeros(p.shape, dtype=torch.bool) for n, p in scoped_parameters(model).items()}
    with ablated(model, empty):
        again = item_losses(model, subsets)
    assert base.equals(again)


def test_controls_have_the_spots_counts(llama):
    model, _ = llama
    params = scoped_parameters(model)
    spot = select_top_k({n: p.detach().abs() for n, p in params.items()}, 3.0)
    for control in (random_per_tensor(spot, 0), magnitude_per_tensor(model, spot)):
        assert {n: int(m.sum()) for n, m in control.items()} == {n: int(m.sum()) for n, m in spot.items()}
    uniform = random_uniform(spot, 0)
    assert mask_count(uniform) == mask_count(spot)
    assert not all(torch.equal(uniform[n], spot[n]) for n in spot)
