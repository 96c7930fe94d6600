import pytest
import torch

from spot_utils import load_model
from spot_utils.data.models import resolve_dtype


def test_random_models_are_deterministic_and_tiny(tiny):
    model, tok = tiny
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert tok.pad_token_id is not None and not model.training
    ids = torch.tensor([tok("def f(x):\n    return x").input_ids])
    assert model(ids).logits.shape == (1, ids.shape[1], len(tok))


def test_local_folder_round_trip_gives_identical_logits(tmp_path, llama):
    model, tok = llama
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = load_model(str(tmp_path))
    ids = torch.tensor([tok("fn main() {}").input_ids])
    assert torch.equal(model(ids).logits, again(ids).logits)
    assert tok2("abc").input_ids == tok("abc").input_ids


def test_bf16_loading(llama):
    model, _ = load_model("random:qwen2", dtype="bf16")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.mark.parametrize("spec,match", [
    ("no-such-model", "unknown model spec 'no-such-model'.*smollm2-135m"),
    ("random:gpt9", "unknown random model 'gpt9'"),
    ("missing.gguf", "GGUF file not found"),
])
def test_bad_specs_are_named(spec, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        load_model(spec)


def test_folder_without_config_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_dtype_names():
    assert resolve_dtype("bfloat16") is torch.bfloat16 and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8")
