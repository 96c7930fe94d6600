"""load_masks recounts the bits against the manifest: a file whose hash is consistent but whose counts, length or
padding are not (a faulty writer, a hand-edited file) is refused, naming the file."""
import json

import numpy as np
import pytest
from safetensors.torch import save_file
import torch

from spot_utils.method import masks as M


def _write(path, packed: dict, shapes: dict, manifest: dict):
    """A mask file as save_masks lays it out, with whatever content and a hash that matches it."""
    packed = {n: torch.from_numpy(np.asarray(b, dtype=np.uint8)) for n, b in packed.items()}
    header = {"shapes": shapes, "manifest": manifest, "sha256": M._content_hash(shapes, manifest, packed)}
    save_file(packed, str(path), metadata={M._KEY: json.dumps(header, sort_keys=True)})


def _bits(mask):
    return np.packbits(mask.reshape(-1), bitorder="little")


MASK = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]], dtype=bool)  # 10 entries, 5 set: 2 packed bytes


def test_a_consistent_file_loads_and_its_counts_are_the_bits(tmp_path):
    _write(tmp_path / "ok.safetensors", {"w": _bits(MASK)}, {"w": [2, 5]}, {"counts": {"w": 5}, "total": 5})
    masks, manifest = M.load_masks(tmp_path / "ok.safetensors")
    assert torch.equal(masks["w"], torch.from_numpy(MASK)) and manifest["total"] == 5


@pytest.mark.parametrize("counts, total", [({"w": 4}, 4), ({"w": 5}, 6), ({"w": 5, "v": 0}, 5), ({}, 5)])
def test_counts_that_differ_from_the_bits_are_refused(tmp_path, counts, total):
    path = tmp_path / "m.safetensors"
    _write(path, {"w": _bits(MASK)}, {"w": [2, 5]}, {"counts": counts, "total": total})
    with pytest.raises(ValueError, match=r"m.safetensors is inconsistent: its manifest records .* its bits hold 5"):
        M.load_masks(path)


def test_bits_set_in_the_padding_are_refused(tmp_path):
    bits = _bits(MASK)
    bits[-1] |= 0b1000_0000  # entry 15 of a 10-entry tensor
    _write(tmp_path / "m.safetensors", {"w": bits}, {"w": [2, 5]}, {"counts": {"w": 5}, "total": 5})
    with pytest.raises(ValueError, match="'w' has bits set past its 10 entries"):
        M.load_masks(tmp_path / "m.safetensors")


def test_a_packed_tensor_too_short_for_its_shape_is_refused(tmp_path):
    _write(tmp_path / "m.safetensors", {"w": _bits(MASK)[:1]}, {"w": [2, 5]}, {"counts": {"w": 3}, "total": 3})
    with pytest.raises(ValueError, match=r"'w' of shape \[2, 5\] needs 2 packed bytes, the file holds 1"):
        M.load_masks(tmp_path / "m.safetensors")


def test_save_masks_output_still_round_trips(tmp_path):
    masks = {"a": torch.rand(7, 3, generator=torch.Generator().manual_seed(1)) > 0.5, "b": torch.zeros(9, dtype=bool)}
    M.save_masks(tmp_path / "r.safetensors", masks, {"model": "x"})
    back, manifest = M.load_masks(tmp_path / "r.safetensors")
    assert all(torch.equal(back[n], masks[n]) for n in masks) and manifest["counts"]["b"] == 0
