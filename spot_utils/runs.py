"""Run folders: big artifacts in runs/<run>/, reader-facing outputs in reports/<run>/."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .io import atomic_path, read_json, sha256_file, write_json
from .paths import REPORTS_DIR, RUNS_DIR


def run_dir(params: dict) -> Path:
    return RUNS_DIR / params["run_name"]


def report_dir(params: dict) -> Path:
    return REPORTS_DIR / params["run_name"]


def figure_path(params: dict, name: str) -> Path:
    return report_dir(params) / "figures" / f"{name}.png"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], manifest: dict) -> str:
    """Write tensors (safetensors, manifest in the metadata) atomically; return the file's SHA-256."""
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({n: t.detach().cpu().contiguous() for n, t in tensors.items()}, str(tmp),
                  metadata={"manifest": json.dumps(manifest)})
    digest = sha256_file(path)
    index = path.parent / "index.json"
    entries = read_json(index) if index.exists() else {}
    entries[path.name] = digest
    write_json(index, entries)
    return digest


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors written by save_tensors, checking the file's hash against its folder's index.json."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
    index = path.parent / "index.json"
    expected = read_json(index).get(path.name) if index.exists() else None
    if expected is None:
        raise ValueError(f"{path} is not listed in {index}: it was not written by this pipeline")
    if sha256_file(path) != expected:
        raise ValueError(f"{path} is truncated or corrupt: its SHA-256 does not match {index}")
    with safe_open(str(path), framework="pt") as f:
        manifest = json.loads((f.metadata() or {}).get("manifest", "{}"))
        return {n: f.get_tensor(n) for n in f.keys()}, manifest


def mask_path(params: dict, kind: str, k_percent: float, granularity: str = "global") -> Path:
    """runs/<run>/masks/<kind>/k<k>_<granularity>.safetensors (kind may be e.g. 'spot' or 'lang_go')."""
    return run_dir(params) / "masks" / kind / f"k{k_percent:g}_{granularity}.safetensors"
