"""Turn source files into cleaned, de-duplicated, split and tokenised corpora, and draw sequences.

A corpus lives in `data/corpora/<tokenizer-hash>/<language>/` (custom sources get a `-<hash>` suffix):
`manifest.json` plus, per split (`score`, `eval`), `tokens.npy` (int32, flat) and `offsets.npy`
(int64, n_files + 1 file boundaries). It is built once and reused; every write is atomic and the
manifest is written last, so a corpus with a manifest is complete.
"""
from __future__ import annotations

from collections import Counter
import hashlib
import itertools
import json
import math
import os
from pathlib import Path
import re
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch

from . import sources as S
from ..base.io import atomic_path, read_json, sha256_file, write_json
from ..base.paths import DATA_DIR, resolve_path

SPLITS = ("score", "eval")
DEFAULT_CORPORA = DATA_DIR / "corpora"
HF_MAX_DOCS = 20_000  # documents read from a streamed Hugging Face dataset
FORMAT = 1
MIN_FILE_TOKENS = 32  # files with fewer tokens are left out of every draw (and counted)
SAMPLING = "random-window/1"  # how load_sequences draws: recorded in every draw's info

# ----------------------------------------------------------------------------------------- cleaning

_LICENCE = re.compile(r"licen[cs]e|copyright|spdx|\(c\)|©", re.I)
_C_LIKE = {"csharp", "cpp", "go", "java", "javascript", "rust", "typescript", "c", "php"}
_MAGIC = re.compile(r"^(#!|<\?php\s*$|#.*(coding[:=]|frozen_string_literal|-\*-))")
_BLOCKS = {"ruby": ("=begin", "=end"), "julia": ("#=", "=#")}


def _comment_syntax(language: str) -> tuple[tuple[str, ...], tuple[str, str] | None]:
    if language in _C_LIKE:
        return (("//", "#") if language == "php" else ("//",)), ("/*", "*/")
    return ("#",), _BLOCKS.get(language)


def _leading_comment(text: str, prefixes: tuple[str, ...], block: tuple[str, str] | None) -> str:
    """The comment block at the very start of `text` ('' if none): one block comment or a run of line comments."""
    if block and text.startswith(block[0]):
        end = text.find(block[1], len(block[0]))
        return "" if end < 0 else text[:end + len(block[1])]
    n = 0
    for line in text.split("\n"):
        s = line.lstrip()
        if not s.startswith(prefixes) or s.startswith(("#!", "#[")):
            break
        n += len(line) + 1
    return text[:n]


def strip_licence_header(text: str, language: str) -> str:
    """Remove leading comment blocks that mention a licence, copyright or SPDX tag.

    Shebang, `<?php` and encoding/magic lines on top are kept; prose languages are returned unchanged.
    """
    if language in S.PROSE_LANGUAGES:
        return text
    prefixes, block = _comment_syntax(language)
    lines = text.split("\n")
    keep = list(itertools.takewhile(lambda l: bool(_MAGIC.match(l)), lines))
    rest, stripped = "\n".join(lines[len(keep):]), False
    while True:
        body = rest.lstrip()
        comment = _leading_comment(body, prefixes, block)
        if not comment or not _LICENCE.search(comment):
            break
        rest, stripped = body[len(comment):], True
    if not stripped:
        return text
    return "\n".join(keep + [rest.lstrip("\n")])


_GUT_START = re.compile(r"^\s*\*{3}\s*START OF (?:THE |THIS )?PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$",
                        re.I | re.M)
_GUT_END = re.compile(r"^\s*\*{3}\s*END OF (?:THE |THIS )?PROJECT GUTENBERG.*$|"
                      r"^\s*End of (?:the |this )?Project Gutenberg.*$", re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Keep only the text between Project Gutenberg's START and END markers (text without markers is kept)."""
    start = _GUT_START.search(text)
    if start:
        text = text[start.end():]
    end = _GUT_END.search(text)
    return text[:end.start()] if end else text


_CODE_DIRECTIVE = re.compile(r"\.\.\s+(code-block|code|sourcecode|doctest|testcode|testoutput|testsetup|"
                             r"productionlist|literalinclude|highlight)::")


def strip_rst_code(text: str) -> str:
    """Remove code from reStructuredText: `::` literal blocks, code directives and `>>>` sessions."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        line = lines[i]
        s = line.lstrip()
        indent = len(line) - len(s)
        if s.startswith(">>>"):
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if _CODE_DIRECTIVE.match(s):
            pass
        elif line.rstrip().endswith("::") and not s.startswith(".. "):
            head = line.rstrip()[:-2]
            if head.strip():  # "Example::" -> "Example:", "Example ::" -> "Example"
                out.append(head.rstrip() + ("" if head.endswith(" ") else ":"))
        else:
            out.append(line)
            i += 1
            continue
        i += 1
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            i += 1
        out.append("")
    return "\n".join(out)


def clean_text(text: str, language: str) -> str:
    """Normalise line endings and BOM, strip Gutenberg boilerplate / rst code / licence headers; '' if empty."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if language == "english":
        text = strip_gutenberg(text)
    elif language == "english_doc":
        text = strip_rst_code(text)
    else:
        text = strip_licence_header(text, language)
    text = text.strip("\n")
    return text + "\n" if text.strip() else ""


def dedupe(docs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """Drop exact duplicates by content hash, keeping the first path in sorted order; return (docs, n_dropped)."""
    seen, kept, dropped = set(), [], 0
    for path, text in sorted(docs):
        h = hashlib.sha256(text.encode("utf-8")).digest()
        if h in seen:
            dropped += 1
        else:
            seen.add(h)
            kept.append((path, text))
    return kept, dropped


def split_files(paths: Iterable[str], eval_fraction: float = 0.2) -> dict[str, list[str]]:
    """Deterministic, disjoint split by file: sort by sha1(path); the last ceil(f * n) go to `eval`."""
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    order = sorted(paths, key=lambda p: hashlib.sha1(p.encode("utf-8")).hexdigest())
    n_eval = math.ceil(eval_fraction * len(order))
    return {"score": order[:len(order) - n_eval], "eval": order[len(order) - n_eval:]}


# ----------------------------------------------------------------------------------------- sources

def _doc_text(row, where: str) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object with a 'text' or 'content' field, got {type(row).__name__}")
    for key in ("text", "content"):
        if isinstance(row.get(key), str):
            return row[key]
    raise ValueError(f"{where}: no 'text' or 'content' string field (fields: {sorted(row)})")


def _of_language(row, language: str) -> bool:
    """Rows that carry a `language` field belong to that language only; rows without one to any."""
    return not isinstance(row, dict) or "language" not in row or row["language"] == language


SKIPS = ("too_large", "long_lines", "outside_links")  # what the caps leave out of a user's source, counted


def _walk_files(root: Path, skipped: Counter) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of the regular files under `root`, sorted; hidden names left out. A symlink is
    followed only when its target lies inside `root` (a file); one leading outside is counted, not followed."""
    real_root = root.resolve()
    found = []
    for folder, dirs, names in os.walk(root):  # followlinks=False: a linked folder is never entered
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in [*names, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            p = Path(folder, name)
            if name.startswith("."):
                continue
            if p.is_symlink():
                target = p.resolve()
                if not target.is_relative_to(real_root):
                    skipped["outside_links"] += 1
                    continue
                if not target.is_file():
                    continue  # a folder linked from inside: its files are walked at their own place
            if p.is_file():
                found.append((p.relative_to(root).as_posix(), p))
    return iter(sorted(found))


def _capped_text(text: str, skipped: Counter) -> str | None:
    """`text`, or None (counted) when it is over the size or line-length caps of sources.MAX_READ_BYTES and
    MAX_LINE_CHARS."""
    if len(text) > S.MAX_READ_BYTES:
        skipped["too_large"] += 1
        return None
    if max(map(len, text.split("\n"))) > S.MAX_LINE_CHARS:
        skipped["long_lines"] += 1
        return None
    return text


def _iter_directory(root: Path, language: str, skipped: Counter) -> Iterator[tuple[str, str]]:
    for rel, p in _walk_files(root, skipped):
        if p.stat().st_size > S.MAX_READ_BYTES:
            skipped["too_large"] += 1
            continue
        text = S.decode(p.read_bytes())
        if text is None:
            continue
        if p.name.endswith(S.EXTENSIONS[language]) or (language == "bash" and not p.suffix and S.is_sh_script(text)):
            text = _capped_text(text, skipped)
            if text is not None:
                yield rel, text


def _iter_jsonl(path: Path, language: str, skipped: Counter) -> Iterator[tuple[str, str]]:
    with open(path, "rb") as f:
        for i in itertools.count(1):
            line = f.readline(S.MAX_READ_BYTES + 1)
            if not line:
                break
            if len(line) > S.MAX_READ_BYTES and not line.endswith(b"\n"):  # a row over the cap: skip to its end
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                skipped["too_large"] += 1
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg}, column {e.colno})") from None
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{i}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if _of_language(row, language):
                text = _capped_text(_doc_text(row, f"{path}:{i}"), skipped)
                if text is not None:
                    yield f"{path.name}/{i:08d}", text


def _iter_hf(spec: str, language: str, skipped: Counter) -> Iterator[tuple[str, str]]:
    from datasets import load_dataset  # deferred: datasets, loaded only for a hub corpus

    name, _, split = spec.partition("@")
    ds = load_dataset(name, split=split or "train", streaming=True)
    for i, row in enumerate(itertools.islice(ds, HF_MAX_DOCS)):
        if _of_language(row, language) and (text := _capped_text(_doc_text(row, f"hf:{spec} row {i}"), skipped)):
            yield f"hf/{i:08d}", text


def _resolve_source(language: str, source, cache_dir, skipped: Counter | None = None
                    ) -> tuple[dict, list[dict], Iterator[tuple[str, str]]]:
    """(identity of the source, its package/licence records, an iterator of (path, raw text)); what the caps
    leave out of a directory or JSONL source is counted in `skipped`. A user's source is identified by the
    SHA-256 of its files' contents (and the caps), so any edit rebuilds its corpus whatever the files' times."""
    skipped = Counter() if skipped is None else skipped
    caps = [S.MAX_READ_BYTES, S.MAX_LINE_CHARS]
    if source is None:
        srcs = S.sources_for(language)
        records = [{"package": s.package, "version": s.version, "kind": s.kind, "licence": s.licence} for s in srcs]
        return {"type": "packages", "keys": [s.key for s in srcs]}, records, S.iter_files(language, cache_dir)
    source = str(source)
    if source.startswith("hf:"):
        return {"type": "hf", "id": source[3:]}, [{"hf_dataset": source[3:]}], _iter_hf(source[3:], language, skipped)
    path = Path(source).resolve()
    if path.is_dir():
        contents = [(rel, sha256_file(p)) for rel, p in _walk_files(path, Counter())]
        ident = {"type": "directory", "path": str(path), "fingerprint": _sha(json.dumps([contents, caps]))}
        return ident, [{"directory": str(path)}], _iter_directory(path, language, skipped)
    if path.is_file() and path.name.endswith(".jsonl"):
        ident = {"type": "jsonl", "path": str(path), "fingerprint": _sha(json.dumps([sha256_file(path), caps]))}
        return ident, [{"jsonl": str(path)}], _iter_jsonl(path, language, skipped)
    raise ValueError(f"source {source!r} is neither a directory, a .jsonl file nor 'hf:<dataset id>'")


# ----------------------------------------------------------------------------------------- tokenising

def _sha(data: str | bytes) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def adds_bos(tokenizer) -> bool:
    """True when the tokenizer puts a BOS token in front by default (e.g. Gemma)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def tokenizer_hash(tokenizer) -> str:
    """A short hash identifying the tokenizer (its full serialisation and BOS behaviour)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    blob = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return _sha(blob + json.dumps([tokenizer.bos_token_id, adds_bos(tokenizer)]))[:16]


def _tokenize(tokenizer, texts: list[str], bos: list[int], batch: int = 64) -> list[np.ndarray]:
    """Token ids of each text (int32 arrays, BOS prepended when given), tokenised in batches."""
    out = []
    for i in range(0, len(texts), batch):
        for ids in tokenizer(texts[i:i + batch], add_special_tokens=False, verbose=False)["input_ids"]:
            arr = np.asarray(bos + list(ids), dtype=np.int64)
            if arr.size and arr.max() >= 2 ** 31:
                raise ValueError("token ids do not fit int32")
            out.append(arr.astype(np.int32))
    return out


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def corpus_dir(language: str, tokenizer, corpora_dir=DEFAULT_CORPORA, source=None, eval_fraction: float = 0.2,
               cache_dir=S.DEFAULT_CACHE) -> Path:
    """Where the corpus of (language, tokenizer, source, eval_fraction) lives."""
    S.check_language(language)
    base = Path(corpora_dir) / tokenizer_hash(tokenizer)
    if source is None and eval_fraction == 0.2:
        return base / language
    ident = _resolve_source(language, source, cache_dir)[0]
    return base / f"{language}-{_sha(json.dumps([ident, eval_fraction]))[:10]}"


def build_corpus(language: str, tokenizer, cache_dir=S.DEFAULT_CACHE, corpora_dir=DEFAULT_CORPORA, source=None,
                 eval_fraction: float = 0.2) -> Path:
    """Build (once) the tokenised score/eval corpus of `language` and return its folder.

    `source`: None for the offline packages of `spot_utils.sources`; a directory (files with the
    language's extensions); a `.jsonl` file (one document per line, field `text` or `content`); or
    `hf:<dataset id>[@split]` (streamed with `datasets`, at most HF_MAX_DOCS documents). JSONL and
    dataset rows with a `language` field are kept only for that language (see `language_source`).
    """
    out = corpus_dir(language, tokenizer, corpora_dir, source, eval_fraction, cache_dir)
    if (out / "manifest.json").is_file():
        return out
    skipped = Counter()
    ident, records, raw = _resolve_source(language, source, cache_dir, skipped)
    cleaned, n_raw = [], 0
    for path, text in raw:
        n_raw += 1
        text = clean_text(text, language)
        if text:
            cleaned.append((path, text))
    docs, n_dup = dedupe(cleaned)
    if not docs:
        left_out = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in skipped.items() if n)
        raise ValueError(f"empty corpus for {language!r} from {ident}: no usable files"
                         + (f" (left out: {left_out})" if left_out else ""))
    text_of = dict(docs)
    bos = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    files, splits = [], {}
    for split, paths in split_files(text_of, eval_fraction).items():
        ids = _tokenize(tokenizer, [text_of[p] for p in paths], bos)
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        tokens = np.concatenate(ids) if ids else np.zeros(0, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        _save_npy(out / split / "tokens.npy", tokens)
        _save_npy(out / split / "offsets.npy", offsets)
        splits[split] = {"files": len(paths), "tokens": int(tokens.size),
                         "sha256": _sha(tokens.tobytes() + offsets.tobytes())}
        files += [{"path": p, "split": split, "tokens": int(n)} for p, n in zip(paths, lengths)]
    manifest = {
        "format": FORMAT, "language": language, "source": ident, "sources": records,
        "tokenizer": {"name": getattr(tokenizer, "name_or_path", None), "class": type(tokenizer).__name__,
                      "hash": tokenizer_hash(tokenizer), "bos_prepended": bool(bos)},
        "eval_fraction": eval_fraction,
        "dropped": {"read": n_raw, "empty": n_raw - len(cleaned), "duplicate": n_dup,
                    **{reason: skipped[reason] for reason in SKIPS}},
        "splits": splits,
        "content_hash": _sha("".join(splits[s]["sha256"] for s in SPLITS)),
        "files": files,
    }
    write_json(out / "manifest.json", manifest)
    return out


# ----------------------------------------------------------------------------------------- sequences

class Sequences(list):
    """A list of 1-D LongTensors with `info` (what was drawn: counts, corpus hash, sampling, files left out)
    and `windows`: the (file path, start token) of each sequence."""

    info: dict
    windows: list[tuple[str, int]]


def windows(lengths, max_len: int, seed: int, min_tokens: int = 2, n: int | None = None):
    """Where the sequences of a split come from: (the first n of) the ordered windows (file, start, stop),
    and how many windows the split holds in all.

    A file of at most `max_len` tokens is one window, the whole file. A longer file's first window starts
    at a seeded uniform offset in [0, length − max_len]; its further windows tile the file around that
    one (the same phase, no overlap) in a seeded order. Files are visited in a seeded order, round-robin:
    every file's first window, then every second window, and so on. Files under `min_tokens` give none.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    first = rng.integers(0, np.maximum(lengths - max_len, 0) + 1)
    phase = first % max_len
    capacity = np.where(lengths > max_len, (lengths - phase) // max_len, 1) * (lengths >= max(min_tokens, 2))
    n = int(capacity.sum()) if n is None else min(n, int(capacity.sum()))
    out, rounds = [], {}
    for rnd in range(int(capacity.max(initial=0))):
        for f in order[capacity[order] > rnd][:n - len(out)]:
            f = int(f)
            if rnd == 0:
                start = int(first[f])
            else:
                if f not in rounds:  # the other tiles of this file, in an order of their own
                    tiles = np.delete(np.arange(capacity[f]), first[f] // max_len)
                    rounds[f] = np.random.default_rng([seed, f]).permutation(tiles)
                start = int(phase[f] + rounds[f][rnd - 1] * max_len)
            out.append((f, start, int(min(start + max_len, lengths[f]))))
        if len(out) == n:
            break
    return out, int(capacity.sum())


def load_sequences(language: str, split: str, tokenizer, n: int, max_len: int, seed: int = 0,
                   cache_dir=S.DEFAULT_CACHE, corpora_dir=DEFAULT_CORPORA, source=None,
                   eval_fraction: float = 0.2, min_tokens: int = MIN_FILE_TOKENS) -> Sequences:
    """Draw `n` sequences (1-D LongTensors of at most max_len tokens) from a split, deterministically.

    The first n of `windows(...)`: windows at seeded random offsets inside files, every file's first one
    before any second one. Files under `min_tokens` tokens are left out and counted (`info["short_files"]`).
    A smaller n gives a prefix of a larger one's sequences. With a BOS-prepending tokenizer, a window
    inside a file has its first token replaced by BOS, so that every sequence opens like a document.
    """

    S.check_language(language)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for {language!r}; accepted: {', '.join(SPLITS)}")
    if n < 1 or max_len < 2:
        raise ValueError(f"need n >= 1 and max_len >= 2, got n={n}, max_len={max_len}")
    root = build_corpus(language, tokenizer, cache_dir, corpora_dir, source, eval_fraction)
    tokens = np.load(root / split / "tokens.npy", mmap_mode="r")
    offsets = np.load(root / split / "offsets.npy")
    lengths = np.diff(offsets)
    picks, available = windows(lengths, max_len, seed, min_tokens, n)
    n_short = int((lengths < max(min_tokens, 2)).sum())
    if available < n:
        raise ValueError(f"{language!r} split {split!r} has only {available} sequences of <= {max_len} tokens "
                         f"(need n={n}; {n_short} files under {min_tokens} tokens left out)")
    manifest = read_json(root / "manifest.json")
    paths = [f["path"] for f in manifest["files"] if f["split"] == split]
    bos = manifest["tokenizer"]["bos_prepended"]
    seqs = Sequences()
    for f, a, b in picks:
        ids = np.array(tokens[offsets[f] + a:offsets[f] + b], dtype=np.int64)
        if bos and a > 0:  # every sequence opens with BOS, as the file does (its first token gives way)
            ids[0] = tokens[offsets[f]]
        seqs.append(torch.from_numpy(ids))
    seqs.windows = [(paths[f], a) for f, a, _ in picks]
    seqs.info = {"language": language, "split": split, "n_sequences": n, "max_len": max_len, "seed": seed,
                 "sampling": SAMPLING, "n_tokens": int(sum(len(s) for s in seqs)),
                 "n_files": len({f for f, _, _ in picks}), "available": available,
                 "min_tokens": min_tokens, "short_files": n_short, "corpus_hash": manifest["content_hash"]}
    return seqs


def language_source(corpus_source, language: str):
    """The `source=` of one language from a run's `corpus_source` (None: the offline packages).

    `corpus_source` is `hf:<dataset>[@split]` (rows with a `language` field are filtered by it), a
    `.jsonl` file (likewise), or a folder holding, per language, a subfolder `<language>/` of files or a
    file `<language>.jsonl`. Relative paths resolve from the repository root.
    """
    if corpus_source is None:
        return None
    if str(corpus_source).startswith("hf:"):
        return str(corpus_source)
    root = resolve_path(str(corpus_source))
    if root.is_file() and root.name.endswith(".jsonl"):
        return root
    if not root.is_dir():
        raise ValueError(f"corpus_source {str(corpus_source)!r} ({root}) is neither a folder, a .jsonl file nor "
                         f"'hf:<dataset>'")
    for candidate in (root / language, root / f"{language}.jsonl"):
        if candidate.exists():
            return candidate
    raise ValueError(f"corpus_source {root} has no {language}/ folder nor {language}.jsonl for language {language!r}")


def corpus_summary(tokenizer, languages: Iterable[str] | None = None, cache_dir=S.DEFAULT_CACHE,
                   corpora_dir=DEFAULT_CORPORA, sources: dict | None = None):
    """A pandas DataFrame, one row per language: files and tokens per split, packages and licences.

    Builds missing corpora; `languages` defaults to the scored, unseen and prose languages;
    `sources` maps a language to its `source=` (see `build_corpus`), the packages otherwise.
    """

    rows = []
    for lang in languages or S.SCORED_LANGUAGES + S.UNSEEN_LANGUAGES + S.PROSE_LANGUAGES:
        src = (sources or {}).get(lang)
        m = read_json(build_corpus(lang, tokenizer, cache_dir, corpora_dir, src) / "manifest.json")
        recs = m["sources"]
        rows.append({"language": lang,
                     **{f"{s}_{k}": m["splits"][s][k] for s in SPLITS for k in ("files", "tokens")},
                     "duplicates": m["dropped"]["duplicate"],
                     "packages": ", ".join(sorted({r.get("package", next(iter(r.values()))) for r in recs})),
                     "licence": "; ".join(sorted({r.get("licence", "user-supplied") for r in recs}))})
    return pd.DataFrame(rows).set_index("language")
