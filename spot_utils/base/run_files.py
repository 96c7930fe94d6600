"""Run folders: big artifacts in runs/<run>/, reader-facing outputs in reports/<run>/.

Every path of a run artifact is spelled here and nowhere else, addressed by the run: its params dict or its name.
"""
from __future__ import annotations

from collections.abc import Mapping
import json
from pathlib import Path
from typing import Callable

from safetensors import safe_open
from safetensors.torch import save_file
import torch

from .io import atomic_path, read_json, sha256_file, write_json
from .paths import REPORTS_DIR, RUNS_DIR

HALVES = ("half_a", "half_b")  # the two disjoint halves of each language's score split
STORAGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # score files on disk


def run_name(run: dict | str) -> str:
    """The run's name, from its params dict or the name itself."""
    return run["run_name"] if isinstance(run, Mapping) else str(run)


def run_dir(run: dict | str, root: str | Path | None = None) -> Path:
    """runs/<run>/ (root: another runs folder than SPOT_RUNS_DIR)."""
    return Path(RUNS_DIR if root is None else root) / run_name(run)


def report_dir(run: dict | str) -> Path:
    return REPORTS_DIR / run_name(run)


def figure_path(run: dict | str, name: str) -> Path:
    return report_dir(run) / "figures" / f"{name}.png"


def scores_path(run: dict | str, lang: str, half: str | None = None) -> Path:
    """runs/<run>/scores/<lang>.safetensors, or runs/<run>/scores/<half>/<lang>.safetensors for half in HALVES."""
    if half is None:
        return run_dir(run) / "scores" / f"{lang}.safetensors"
    if half not in HALVES:
        raise ValueError(f"unknown half {half!r}; accepted: {HALVES}")
    return run_dir(run) / "scores" / half / f"{lang}.safetensors"


def aggregate_path(run: dict | str) -> Path:
    """runs/<run>/aggregate.safetensors: A, the code languages' aggregate (stage 02)."""
    return run_dir(run) / "aggregate.safetensors"


def general_path(run: dict | str) -> Path:
    """runs/<run>/general.safetensors: G, the general-text reference on the aggregate's scale (stage 02)."""
    return run_dir(run) / "general.safetensors"


def mask_path(run: dict | str, kind: str, k_percent: float, configuration: str = "global",
              root: str | Path | None = None) -> Path:
    """runs/<run>/masks/<kind>/k<k>_<configuration>.safetensors: the spot of a configuration (selection.CONFIGURATIONS);
    every other kind (e.g. 'lang_go', 'code_over_general') is one global selection, stored under 'global'."""
    return run_dir(run, root) / "masks" / kind / f"k{k_percent:g}_{configuration}.safetensors"


def ablation_entry_path(run: dict | str, entry: str) -> Path:
    """runs/<run>/ablation/<entry>.json: the per-item results of one ablation of stage 04 (entry: an id such as
    'baseline' or 'paper/spot/k1', from ablation_loop.entry_id), written as soon as it is measured."""
    return run_dir(run) / "ablation" / f"{entry}.json"


def checkpoint_dir(run: dict | str, lang: str, half: str) -> Path:
    """runs/<run>/checkpoints/<lang>/<half>/: scoring checkpoints of one half of one language."""
    return run_dir(run) / "checkpoints" / lang / half


def stage_record_path(run: dict | str, stage: str) -> Path:
    """runs/<run>/<stage>.json: what a stage saw (device, threads, seconds, inputs), read into the manifest."""
    return run_dir(run) / f"{stage}.json"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], manifest: dict,
                 dtype: str = "float32") -> str:
    """Write tensors (safetensors, manifest in the metadata) atomically; return the file's SHA-256.

    dtype: the dtype floating-point tensors are stored in (STORAGE_DTYPES; recorded in the manifest as
    `storage_dtype` when it is not float32). load_tensors returns float32 either way.
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"unknown storage dtype {dtype!r}; accepted: {tuple(STORAGE_DTYPES)}")
    path = Path(path)
    store = STORAGE_DTYPES[dtype]
    if dtype != "float32":
        manifest = dict(manifest, storage_dtype=dtype)
    with atomic_path(path) as tmp:
        save_file({n: (t.to(store) if t.is_floating_point() else t).detach().cpu().contiguous()
                   for n, t in tensors.items()}, str(tmp), metadata={"manifest": json.dumps(manifest)})
    digest = sha256_file(path)
    index = path.parent / "index.json"
    entries = read_json(index) if index.exists() else {}
    entries[path.name] = digest
    write_json(index, entries)
    return digest


def verify_tensors(path: str | Path) -> dict:
    """Check a file written by save_tensors against its folder's index.json (SHA-256); return its manifest.

    Reads the file once without keeping it: a complete, intact file passes, a missing, unlisted, truncated or
    corrupt one raises.
    """
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
        return json.loads((f.metadata() or {}).get("manifest", "{}"))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors written by save_tensors, checking the file's hash against its folder's index.json.

    Floating-point tensors stored in another dtype come back as float32.
    """
    manifest = verify_tensors(path)
    with safe_open(str(path), framework="pt") as f:
        tensors = {n: f.get_tensor(n) for n in f.keys()}
    if manifest.get("storage_dtype", "float32") != "float32":
        tensors = {n: t.float() if t.is_floating_point() else t for n, t in tensors.items()}
    return tensors, manifest


def iter_tensors(path: str | Path):
    """(name, tensor) of a file written by save_tensors, one tensor in memory at a time (after load_tensors' hash
    check; float32 as load_tensors returns them)."""
    manifest = verify_tensors(path)
    widen = manifest.get("storage_dtype", "float32") != "float32"
    with safe_open(str(path), framework="pt") as f:
        for n in f.keys():
            t = f.get_tensor(n)
            yield n, t.float() if widen and t.is_floating_point() else t


def tensors_of(value: dict | str | Path) -> dict[str, torch.Tensor]:
    """The tensors themselves: a dict as given, a path read with load_tensors."""
    return load_tensors(value)[0] if isinstance(value, (str, Path)) else value


def is_complete(path: str | Path, **expected) -> bool:
    """Whether a file written by save_tensors exists, passes its hash check and its manifest has `expected`."""
    try:
        manifest = verify_tensors(path)
    except (FileNotFoundError, ValueError):
        return False
    return all(manifest.get(k) == v for k, v in expected.items())


class Lazy(Mapping):
    """A read-only mapping {key: load(source)} that makes each value on access and keeps none: iterating it holds
    one value at a time. E.g. Lazy({lang: scores_path(run, lang)}, lambda p: load_tensors(p)[0])."""

    def __init__(self, sources: dict, load: Callable):
        self._sources, self._load = dict(sources), load

    def __getitem__(self, key):
        return self._load(self._sources[key])

    def __iter__(self):
        return iter(self._sources)

    def __len__(self):
        return len(self._sources)
