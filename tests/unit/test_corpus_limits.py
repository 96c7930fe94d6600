"""Corpus building with bounded memory and no escape: files over the size or line-length cap are skipped and
counted, symlinks leaving the corpus folder are not followed (counted), the cache is keyed on file contents."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spot_utils.base.io import read_json
from spot_utils.data import corpus, sources as S
from spot_utils.data.corpus import build_corpus, corpus_dir
from test_corpus import _byte_tokenizer

BODY = "func f(x int) int {\n\treturn x + 1\n}\n"


@pytest.fixture(scope="module")
def tok():
    return _byte_tokenizer()


def _folder(tmp_path, n=4):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"f{i}.go").write_text(f"// file {i}\n" + BODY * (3 + i))
    return src


def _dropped(root):
    return read_json(root / "manifest.json")["dropped"]


def test_oversized_and_long_line_files_are_skipped_and_counted(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_READ_BYTES", 5_000)
    monkeypatch.setattr(S, "MAX_LINE_CHARS", 300)
    src = _folder(tmp_path)
    (src / "huge.go").write_text(BODY * 400)  # 13 KB of short lines: over the size cap
    (src / "minified.go").write_text("var a = 1;" * 100 + "\n")  # one 1,000-character line
    root = build_corpus("go", tok, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.25)
    assert _dropped(root) | {"read": 0} == {"read": 0, "empty": 0, "duplicate": 0, "too_large": 1, "long_lines": 1,
                                            "outside_links": 0}
    paths = {f["path"] for f in read_json(root / "manifest.json")["files"]}
    assert paths == {f"f{i}.go" for i in range(4)}


def test_an_oversized_jsonl_row_is_skipped_without_reading_it_whole(tok, tmp_path, monkeypatch):
    monkeypatch.setattr(S, "MAX_READ_BYTES", 2_000)
    path = tmp_path / "docs.jsonl"
    rows = [json.dumps({"text": f"# doc {i}\n" + "x = 1\n" * 40}) for i in range(4)]
    rows.insert(2, json.dumps({"text": "y" * 10_000}))  # one row over the cap, no newline inside it
    path.write_text("\n".join(rows) + "\n")
    root = build_corpus("julia", tok, corpora_dir=tmp_path / "c", source=path, eval_fraction=0.25)
    assert _dropped(root)["too_large"] == 1
    assert len(read_json(root / "manifest.json")["files"]) == 4
    assert {f["path"] for f in read_json(root / "manifest.json")["files"]} == \
        {"docs.jsonl/00000001", "docs.jsonl/00000002", "docs.jsonl/00000004", "docs.jsonl/00000005"}


def test_the_default_caps_keep_a_50_mb_single_line_file_out(tok, tmp_path, monkeypatch):
    src = _folder(tmp_path)
    with open(src / "blob.go", "w") as f:  # 50 MB without a newline: tokenised whole, it took a kernel past 9 GB
        f.write("a" * 50_000_000)
    tokenize = corpus._tokenize

    def guarded(tokenizer, texts, bos, *args):  # fail at once, not after gigabytes, if the file gets through
        assert max(map(len, texts), default=0) <= S.MAX_READ_BYTES, "a document over the cap reached the tokenizer"
        return tokenize(tokenizer, texts, bos, *args)
    monkeypatch.setattr(corpus, "_tokenize", guarded)
    root = build_corpus("go", tok, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.25)
    assert _dropped(root)["too_large"] == 1


def test_symlinks_leaving_the_corpus_folder_are_not_followed(tok, tmp_path):
    src = _folder(tmp_path)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwd.go").write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)
    os.symlink(outside / "passwd.go", src / "link.go")  # a file outside
    os.symlink(outside, src / "linked_dir")  # a folder outside
    os.symlink(src / "f0.go", src / "inside.go")  # a file inside: followed (and a duplicate of f0.go)
    root = build_corpus("go", tok, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.25)
    assert _dropped(root)["outside_links"] == 2 and _dropped(root)["duplicate"] == 1
    assert "root:x:0:0" not in "".join(tok.decode(np.load(root / s / "tokens.npy").tolist()) for s in ("score", "eval"))


def test_cache_is_keyed_on_contents_not_times_or_sizes(tok, tmp_path):
    src = _folder(tmp_path)
    first = build_corpus("go", tok, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.25)
    target = src / "f1.go"
    stat = target.stat()
    text = target.read_text()
    target.write_text(text.replace("return x + 1", "return x + 2"))  # same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the old time restored
    assert target.stat().st_size == stat.st_size and target.stat().st_mtime_ns == stat.st_mtime_ns
    second = build_corpus("go", tok, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.25)
    assert second != first
    assert corpus_dir("go", tok, tmp_path / "c", src, 0.25) == second
    assert read_json(second / "manifest.json")["content_hash"] != read_json(first / "manifest.json")["content_hash"]
