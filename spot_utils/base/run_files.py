"""Run folders: big artifacts in runs/<run>/, reader-facing outputs in reports/<run>/.

Every path of a run artifact is spelled here and nowhere else, addressed by the run: its params dict or its name.
"""
from __future__ import annotations

from collections.abc import Mapping
import json
import math
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


def tuning_entry_path(run: dict | str, entry: str) -> Path:
    """runs/<run>/tuning/<entry>.json: the per-item results of one trained arm and seed of stage 07 (entry: an id
    from tuning_stage.entry_id), written as soon as it is measured."""
    return run_dir(run) / "tuning" / f"{entry}.json"


def drop_half_scores(run: dict | str, languages) -> int:
    """Delete the half score files of `languages` (and their index.json entries) once nothing needs them (stage
    05's stability check has read them); return the bytes freed. A rerun of stage 01 then scores the halves again."""
    freed = 0
    for half in HALVES:
        index = scores_path(run, "x", half).parent / "index.json"
        entries = read_json(index) if index.exists() else {}
        for lang in languages:
            path = scores_path(run, lang, half)
            if path.is_file():
                freed += path.stat().st_size
                path.unlink()
            entries.pop(path.name, None)
        if index.exists():
            write_json(index, entries)
    return freed


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
    _index(path, digest)
    return digest


_SAFETENSORS_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.uint8: "U8"}


class TensorWriter:
    """A safetensors file written tensor by tensor, one tensor in memory at a time (a context manager: the file
    appears, atomically, when the block ends without error and every tensor was written).

    shapes: {name: shape} of every tensor, known before the first is written (the header comes first); write(name,
    tensor) each name once, in any order (each goes to its place). The bytes equal those of safetensors' save_file
    on the same tensors and metadata (one dtype: tensors sorted by name, compact JSON header padded to 8 bytes).
    `digest` is the file's SHA-256 once closed.
    """

    def __init__(self, path: str | Path, shapes: dict[str, tuple], metadata: dict[str, str],
                 dtype: torch.dtype = torch.float32):
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"cannot stream-write dtype {dtype}; accepted: {tuple(_SAFETENSORS_DTYPES)}")
        self.path, self.shapes, self.dtype, self.digest = Path(path), dict(shapes), dtype, None
        item = torch.empty((), dtype=dtype).element_size()
        header, self._offsets, start = {"__metadata__": dict(metadata)}, {}, 0
        for n in sorted(shapes):
            size = math.prod(shapes[n]) * item
            header[n] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shapes[n]), "data_offsets": [start, start + size]}
            self._offsets[n], start = start, start + size
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        self._header = len(text + b" " * (-len(text) % 8)).to_bytes(8, "little") + text + b" " * (-len(text) % 8)
        self._written: set[str] = set()

    def __enter__(self) -> "TensorWriter":
        self._atomic = atomic_path(self.path)
        self._file = open(self._atomic.__enter__(), "wb")
        self._file.write(self._header)
        return self

    def write(self, name: str, tensor: torch.Tensor) -> None:
        if name not in self._offsets or name in self._written:
            raise ValueError(f"tensor {name!r} is not in the shapes given for {self.path}, or came twice")
        if tuple(tensor.shape) != tuple(self.shapes[name]):
            raise ValueError(f"tensor {name!r} has shape {tuple(tensor.shape)}, the header of {self.path} says "
                             f"{tuple(self.shapes[name])}")
        self._file.seek(len(self._header) + self._offsets[name])
        self._file.write(tensor.detach().to("cpu", self.dtype).contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        self._written.add(name)

    def __exit__(self, kind, error, trace):
        self._file.close()
        if kind is None and self._written != set(self._offsets):
            kind = ValueError
            error = ValueError(f"tensors {sorted(set(self._offsets) - self._written)} of {self.path} were never written")
        self._atomic.__exit__(kind, error, trace)  # removes the temporary file on an error, renames it otherwise
        if kind is not None:
            raise error
        self.digest = sha256_file(self.path)
        return False


def streaming_saver(path: str | Path, shapes: dict[str, tuple], manifest: dict) -> TensorWriter:
    """A TensorWriter for what save_tensors writes in float32 (the same bytes); list it in index.json with
    `indexed` once closed."""
    return TensorWriter(path, shapes, {"manifest": json.dumps(manifest)})


def indexed(writer: TensorWriter) -> str:
    """Record a closed writer's file in its folder's index.json, as save_tensors does; return its SHA-256."""
    _index(writer.path, writer.digest)
    return writer.digest


def _index(path: Path, digest: str) -> None:
    index = path.parent / "index.json"
    entries = read_json(index) if index.exists() else {}
    entries[path.name] = digest
    write_json(index, entries)


class TensorFile(Mapping):
    """A file written by save_tensors as a read-only mapping {name: float32 tensor} that reads each tensor when
    it is asked for and keeps none (safetensors reads one tensor from the file): iterating it holds one tensor
    at a time. The hash is checked once, when it is opened. `shapes` gives every shape without reading data."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest = verify_tensors(self.path)
        self._widen = self.manifest.get("storage_dtype", "float32") != "float32"
        with safe_open(str(self.path), framework="pt") as f:
            self._names = list(f.keys())
            self.shapes = {n: tuple(f.get_slice(n).get_shape()) for n in self._names}

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self.shapes:
            raise KeyError(f"{name!r} is not a tensor of {self.path}")
        with safe_open(str(self.path), framework="pt") as f:
            t = f.get_tensor(name)
        return t.float() if self._widen and t.is_floating_point() else t

    def __contains__(self, name) -> bool:  # from the header: Mapping's default would read the tensor
        return name in self.shapes

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


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
