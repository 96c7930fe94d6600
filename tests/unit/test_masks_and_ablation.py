import math
import pytest
import torch

from conftest import random_sequences
from spot_utils import (ablated, load_masks, magnitude_per_tensor, mask_and, mask_count, mask_minus, mask_or,
                        random_per_tensor, random_uniform, save_masks, scoped_parameters, select_top_k)
from spot_utils.measure.evaluation import item_losses


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


def _swap_bits_in_data(path, old: int, new: int) -> None:
    """Replace the first data byte `old` by `new` (same number of set bits) after the safetensors header."""
    data = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(data[:8], "little")
    at = data.index(bytes([old]), start)
    data[at] = new
    path.write_bytes(bytes(data))


def test_mask_with_swapped_bits_is_rejected_in_any_folder(tmp_path):
    mask = torch.zeros(64, dtype=torch.bool)
    mask[0] = True
    save_masks(tmp_path / "m.safetensors", {"a": mask}, {"k_percent": 1.0})
    moved = tmp_path / "elsewhere" / "copy.safetensors"  # no index.json next to it: the file checks itself
    moved.parent.mkdir()
    moved.write_bytes((tmp_path / "m.safetensors").read_bytes())
    assert torch.equal(load_masks(moved)[0]["a"], mask)
    _swap_bits_in_data(moved, 0b01, 0b10)  # same count of set bits, another entry
    with pytest.raises(ValueError, match="corrupt"):
        load_masks(moved)


def test_identical_masks_give_identical_bytes(tmp_path):
    masks = {"b": torch.tensor([True, False, True]), "a": torch.ones(2, 2, dtype=torch.bool)}
    blobs = set()
    for i in range(8):
        save_masks(tmp_path / f"{i}.safetensors", masks, {"model": "x", "k_percent": 1.0, "seed": 0})
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1


def test_load_masks_names_a_folder_or_a_foreign_file(tmp_path):
    with pytest.raises(ValueError, match="folder"):
        load_masks(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="cannot read masks from .*notes.txt"):
        load_masks(tmp_path / "notes.txt")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "w.safetensors"))  # a safetensors file, but not masks
    with pytest.raises(ValueError, match="not a mask file"):
        load_masks(tmp_path / "w.safetensors")


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


def test_random_uniform_draws_each_size_afresh_and_each_seed_reproducibly():
    """One seed at two sizes gives independent draws, not a prefix of one permutation (never nested masks): the
    smaller mask's overlap with the larger is what independent uniform draws give, far below its own size."""
    from spot_utils.method.ablation import random_uniform_of
    shapes = {"a": (64, 64), "b": (32, 128)}
    n = 64 * 64 + 32 * 128
    small, large = random_uniform_of(400, 3, shapes), random_uniform_of(2000, 3, shapes)
    assert mask_count(small) == 400 and mask_count(large) == 2000
    overlap = sum(int((small[t] & large[t]).sum()) for t in shapes)
    expected = 400 * 2000 / n  # ≈ 98 for independent draws; 400 if nested
    assert abs(overlap - expected) < 4 * math.sqrt(expected)
    again = random_uniform_of(400, 3, shapes)
    assert all(torch.equal(small[t], again[t]) for t in shapes)
    other = random_uniform_of(400, 4, shapes)
    assert not all(torch.equal(small[t], other[t]) for t in shapes)
