"""Fast offline tests of the corpus layer, on the committed fixture corpus and a byte-level tokenizer."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from spot_utils.data import sources as S
from spot_utils.data.corpus import (build_corpus, clean_text, corpus_summary, dedupe, load_sequences, split_files,
                               strip_gutenberg, strip_licence_header, strip_rst_code)
from spot_utils.base.io import read_json

FIXTURE = Path(__file__).parents[1] / "fixtures" / "corpus"
FIXTURE_LANGUAGES = S.SCORED_LANGUAGES + S.UNSEEN_LANGUAGES + S.PROSE_LANGUAGES


def _byte_tokenizer(bos: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({"<|endoftext|>": 256, "<bos>": 257})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 257)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   bos_token="<bos>", name_or_path="test-bytes" + ("-bos" if bos else ""))


@pytest.fixture(scope="module")
def tok():
    return _byte_tokenizer()


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


def _build(lang, tok, corpora_dir, source=None):
    return build_corpus(lang, tok, corpora_dir=corpora_dir, source=source or FIXTURE / lang)


@pytest.mark.parametrize("lang", FIXTURE_LANGUAGES)
def test_every_fixture_language_has_both_splits_and_enough_chunks(lang, tok, corpora):
    m = read_json(_build(lang, tok, corpora) / "manifest.json")
    assert m["splits"]["score"]["files"] > 0 and m["splits"]["eval"]["files"] > 0
    seqs = load_sequences(lang, "score", tok, 8, 64, corpora_dir=corpora, source=FIXTURE / lang)
    assert len(seqs) == 8 and seqs.info["available"] >= 8


def test_splits_are_disjoint_and_deterministic(tok, tmp_path):
    a = read_json(_build("go", tok, tmp_path / "a") / "manifest.json")
    b = read_json(_build("go", tok, tmp_path / "b") / "manifest.json")
    assert a["files"] == b["files"] and a["content_hash"] == b["content_hash"]
    score = {f["path"] for f in a["files"] if f["split"] == "score"}
    evals = {f["path"] for f in a["files"] if f["split"] == "eval"}
    assert score and evals and not score & evals
    assert score | evals == {p.name for p in (FIXTURE / "go").iterdir()}


def test_split_files_sizes():
    assert [len(v) for v in split_files(["a", "b"], 0.2).values()] == [1, 1]
    parts = split_files([f"f{i}" for i in range(11)], 0.2)
    assert len(parts["eval"]) == 3 and len(parts["score"]) == 8
    assert split_files([f"f{i}" for i in range(11)], 0.2) == parts
    with pytest.raises(ValueError):
        split_files(["a"], 1.0)


def test_dedupe_removes_exact_duplicate(tok, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    body = "def f(x):\n    return x + 1\n" * 20
    (src / "b.py").write_text(body)
    (src / "a.py").write_text(body)
    (src / "c.py").write_text(body.replace("1", "2"))
    m = read_json(_build("python", tok, tmp_path / "corpora", src) / "manifest.json")
    assert sorted(f["path"] for f in m["files"]) == ["a.py", "c.py"]
    assert m["dropped"]["duplicate"] == 1
    assert dedupe([("b", "x"), ("a", "x")]) == ([("a", "x")], 1)


def test_licence_header_stripping():
    c = "/*\n * Copyright (c) 2020 Someone\n * Licensed under MIT.\n */\n\n// SPDX-License-Identifier: MIT\n" \
        "/* The widget. */\nint main(void) { return 0; }\n"
    assert strip_licence_header(c, "c") == "/* The widget. */\nint main(void) { return 0; }\n"
    py = "#!/usr/bin/env python3\n# Copyright 2001 PSF\n# All rights reserved.\n\n# helper\nx = 1\n"
    assert strip_licence_header(py, "python") == "#!/usr/bin/env python3\n# helper\nx = 1\n"
    php = "<?php\n\n/*\n * (c) Fabien Potencier\n * For the full copyright and license information...\n */\n\nnamespace A;\n"
    assert strip_licence_header(php, "php") == "<?php\nnamespace A;\n"
    plain = "// Package fmt formats things.\npackage fmt\n"
    assert strip_licence_header(plain, "go") == plain
    assert strip_licence_header("# Copyright\nHello\n", "english") == "# Copyright\nHello\n"
    assert clean_text("\ufeff// License: MIT\r\nint x;\r\n\r\n", "cpp") == "int x;\n"
    assert clean_text("// License only\n", "cpp") == ""


def test_gutenberg_and_rst_stripping():
    g = "Title page\n*** START OF THE PROJECT GUTENBERG EBOOK HAMLET ***\nTo be.\n" \
        "*** END OF THE PROJECT GUTENBERG EBOOK HAMLET ***\nLicence text\n"
    assert strip_gutenberg(g).strip() == "To be."
    old = "header\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nVerse.\n" \
          "End of Project Gutenberg's Hamlet\n"
    assert strip_gutenberg(old).strip() == "Verse."
    assert strip_gutenberg("No markers.\n") == "No markers.\n"
    rst = ("Intro text. For example::\n\n   x = 1\n   y = 2\n\nMore prose.\n\n.. code-block:: python\n\n"
           "   print(1)\n\n>>> 1 + 1\n2\n\n.. note::\n\n   A note stays.\n")
    out = strip_rst_code(rst)
    assert "x = 1" not in out and "print(1)" not in out and ">>>" not in out and "\n2\n" not in out
    assert "Intro text. For example:" in out and "More prose." in out and "A note stays." in out


def test_load_sequences_exact_deterministic(tok, corpora):
    kw = dict(corpora_dir=corpora, source=FIXTURE / "rust")
    a = load_sequences("rust", "score", tok, 12, 64, seed=3, **kw)
    b = load_sequences("rust", "score", tok, 12, 64, seed=3, **kw)
    assert len(a) == 12
    assert all(s.dtype == torch.long and s.ndim == 1 and 2 <= len(s) <= 64 for s in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert a.info["n_tokens"] == sum(len(s) for s in a) and a.info["n_files"] == 3  # round-robin over 3 files
    c = load_sequences("rust", "score", tok, 12, 64, seed=4, **kw)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    first = load_sequences("rust", "score", tok, 3, 64, seed=3, **kw)  # round 1 = first chunk of each file
    assert all(torch.equal(x, y) for x, y in zip(first, a[:3]))


def test_load_sequences_errors(tok, corpora):
    kw = dict(corpora_dir=corpora, source=FIXTURE / "ruby")
    with pytest.raises(ValueError, match=r"'ruby'.*'eval'.*only \d+ sequences.*n=100000"):
        load_sequences("ruby", "eval", tok, 100000, 64, **kw)
    with pytest.raises(ValueError, match="unknown language 'cobol'.*accepted: bash"):
        load_sequences("cobol", "score", tok, 1, 64, **kw)
    with pytest.raises(ValueError, match="unknown split 'train'.*score, eval"):
        load_sequences("ruby", "train", tok, 1, 64, **kw)
    with pytest.raises(ValueError, match="julia.*directory"):
        build_corpus("julia", tok, corpora_dir=corpora)


def test_empty_corpus_error(tok, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "x.jl").write_text("# Copyright me, licence MIT\n")
    with pytest.raises(ValueError, match="empty corpus for 'julia'"):
        build_corpus("julia", tok, corpora_dir=tmp_path / "c", source=tmp_path / "empty")


def test_jsonl_source(tok, tmp_path):
    path = tmp_path / "docs.jsonl"
    docs = [{"text": f"function f{i}(x)\n    return x + {i}\nend\n" * 10} for i in range(4)]
    docs.append({"content": "println(\"hi\")\n" * 30})
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    m = read_json(build_corpus("julia", tok, corpora_dir=tmp_path / "c", source=path) / "manifest.json")
    assert m["source"]["type"] == "jsonl" and len(m["files"]) == 5
    assert m["splits"]["eval"]["files"] == 1
    seqs = load_sequences("julia", "score", tok, 4, 32, corpora_dir=tmp_path / "c", source=path)
    assert len(seqs) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1.*'text' or 'content'"):
        build_corpus("julia", tok, corpora_dir=tmp_path / "c", source=bad)


def test_manifest_counts_add_up(tok, corpora):
    import hashlib

    root = _build("java", tok, corpora)
    m = read_json(root / "manifest.json")
    for split in ("score", "eval"):
        tokens = np.load(root / split / "tokens.npy")
        offsets = np.load(root / split / "offsets.npy")
        assert tokens.dtype == np.int32 and offsets.dtype == np.int64
        files = [f for f in m["files"] if f["split"] == split]
        assert m["splits"][split]["files"] == len(files) == len(offsets) - 1
        assert m["splits"][split]["tokens"] == tokens.size == offsets[-1] == sum(f["tokens"] for f in files)
        assert m["splits"][split]["sha256"] == hashlib.sha256(tokens.tobytes() + offsets.tobytes()).hexdigest()
    assert m["tokenizer"]["name"] == "test-bytes" and not m["tokenizer"]["bos_prepended"]


def test_bos_is_prepended_per_file(tmp_path):
    tok = _byte_tokenizer(bos=True)
    root = build_corpus("go", tok, corpora_dir=tmp_path, source=FIXTURE / "go")
    tokens, offsets = np.load(root / "score" / "tokens.npy"), np.load(root / "score" / "offsets.npy")
    assert (tokens[offsets[:-1]] == 257).all() and (tokens == 257).sum() == len(offsets) - 1
    assert read_json(root / "manifest.json")["tokenizer"]["bos_prepended"]


def test_corpus_summary(tok, corpora):
    df = corpus_summary(tok, ["go", "english"], corpora_dir=corpora,
                        sources={lang: FIXTURE / lang for lang in ("go", "english")})
    assert list(df.index) == ["go", "english"]
    assert (df["score_files"] > 0).all() and (df["eval_tokens"] > 0).all()


# ----------------------------------------------------------------------------------------- sampling

def test_windows_random_offsets_round_robin_and_tiling():
    from spot_utils.data.corpus import windows

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(101, 2000, 300), [100, 50, 7, 1, 0]])  # 300 longer than a window
    picks, available = windows(lengths, 100, seed=5, min_tokens=8)
    assert picks == windows(lengths, 100, seed=5, min_tokens=8)[0]
    assert picks != windows(lengths, 100, seed=6, min_tokens=8)[0]
    assert windows(lengths, 100, seed=5, min_tokens=8, n=450) == (picks[:450], available) and len(picks) == available
    first = picks[:302]  # one window per eligible file (300 long, 100 and 50 tokens) before any second
    assert sorted(f for f, _, _ in first) == list(range(302))
    assert {f for f, _, _ in picks} == set(range(302))  # 7, 1 and 0 tokens: under min_tokens, no window
    starts = np.array([a for f, a, _ in first if f < 300])
    slack = lengths[[f for f, _, _ in first if f < 300]] - 100
    # first windows start uniformly in [0, length - 100]: hardly ever at the file start or on a tile boundary
    assert (starts >= 0).all() and (starts <= slack).all()
    assert (starts == 0).sum() <= 3 and (starts % 100 == 0).sum() <= 10
    assert abs(np.mean(starts / slack) - 0.5) < 0.05
    assert (300, 0, 100) in first and (301, 0, 50) in first  # files of at most a window: the whole file
    per_file = {}
    for f, a, b in picks:
        assert b - a == min(100, lengths[f]) and b <= lengths[f]
        per_file.setdefault(f, []).append(a)
    for f, s in per_file.items():  # later windows tile the file around the first one: no overlap, all of it
        s = sorted(s)
        assert all(y - x >= 100 for x, y in zip(s, s[1:]))
        assert s[0] < 100 and lengths[f] - (s[-1] + 100) < 100 if lengths[f] > 100 else s == [0]
    rounds = [sum(1 for g, _, _ in picks[:i] if g == f) for i, (f, _, _) in enumerate(picks)]
    assert rounds == sorted(rounds)  # round r of every file comes before round r + 1 of any


def test_load_sequences_are_windows_of_their_split(tok, corpora):
    kw = dict(corpora_dir=corpora, source=FIXTURE / "java")
    m = read_json(_build("java", tok, corpora) / "manifest.json")
    text = {p.name: p.read_text() for p in (FIXTURE / "java").iterdir()}
    seen = {}
    for split in ("score", "eval"):
        n = sum(f["tokens"] // 64 for f in m["files"] if f["split"] == split) // 2
        seqs = load_sequences("java", split, tok, n, 64, seed=1, **kw)
        paths = {f["path"] for f in m["files"] if f["split"] == split}
        seen[split] = {p for p, _ in seqs.windows}
        assert seen[split] == paths  # every file gives a window before any gives a second
        for s, (path, start) in zip(seqs, seqs.windows):
            raw = clean_text(text[path], "java").encode("utf-8")  # byte tokenizer: token i = byte i
            assert tok.decode(s.tolist()) == raw[start:start + 64].decode("utf-8", "replace")
        assert sum(start > 0 for _, start in seqs.windows) >= len(seqs) - 1
    assert not seen["score"] & seen["eval"]


def test_windows_open_with_bos(tmp_path):
    tok = _byte_tokenizer(bos=True)
    seqs = load_sequences("go", "score", tok, 6, 32, corpora_dir=tmp_path, source=FIXTURE / "go")
    assert all(s[0] == 257 and (s[1:] != 257).all() for s in seqs) and any(a > 0 for _, a in seqs.windows)


def test_short_files_left_out_and_counted(tok, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"long{i}.go").write_text(f"package p{i}\n" + "func f() int { return 1 }\n" * 8)
    for i in range(3):
        (src / f"short{i}.go").write_text(f"package s{i}\n")  # 11 bytes: under 32 tokens
    seqs = load_sequences("go", "score", tok, 3, 64, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.34)
    m = read_json(next((tmp_path / "c").rglob("manifest.json")))
    n_short = sum(f["tokens"] < 32 for f in m["files"] if f["split"] == "score")
    assert n_short >= 1 and seqs.info["short_files"] == n_short and seqs.info["min_tokens"] == 32
    assert not any(p.startswith("short") for p, _ in seqs.windows)
    assert seqs.info["sampling"] == "random-window/1"
    with pytest.raises(ValueError, match=r"only \d+ sequences.*files under 32 tokens left out"):
        load_sequences("go", "score", tok, 1000, 64, corpora_dir=tmp_path / "c", source=src, eval_fraction=0.34)


def test_bad_jsonl_line_names_file_and_line(tok, tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps({"text": "x = 1\n" * 20}) + "\n\n" + '{"text": "unterminated\n')
    with pytest.raises(ValueError, match=r"broken.jsonl:3: not valid JSON"):
        build_corpus("julia", tok, corpora_dir=tmp_path / "c", source=bad)
    bad.write_text(json.dumps(["a list"]) + "\n")
    with pytest.raises(ValueError, match=r"broken.jsonl:1: expected a JSON object"):
        build_corpus("julia", tok, corpora_dir=tmp_path / "c2", source=bad)


def test_documented_corpus_sources_work_through_the_stage(tok, tmp_path, monkeypatch):
    import functools

    from spot_utils.data import corpus

    from spot_utils.experiment import stage
    from spot_utils.data.corpus import language_source

    texts = {lang: [p.read_text() for p in sorted((FIXTURE / lang).iterdir())] for lang in ("go", "rust")}
    one = tmp_path / "all.jsonl"  # one file, rows labelled by language
    one.write_text("".join(json.dumps({"language": lang, "text": t}) + "\n" for lang, ts in texts.items() for t in ts))
    folder = tmp_path / "mixed"  # a subfolder for one language, a .jsonl for another
    (folder / "go").mkdir(parents=True)
    for p in (FIXTURE / "go").iterdir():
        (folder / "go" / p.name).write_text(p.read_text())
    (folder / "rust.jsonl").write_text("".join(json.dumps({"content": t}) + "\n" for t in texts["rust"]))
    assert language_source(None, "go") is None and language_source("hf:org/set@train", "go") == "hf:org/set@train"
    assert language_source(str(one), "go") == one and language_source(str(folder), "rust") == folder / "rust.jsonl"
    assert language_source("tests/fixtures/corpus", "go") == FIXTURE / "go"  # relative: from the repository root
    with pytest.raises(ValueError, match=r"no ruby/ folder nor ruby.jsonl"):
        language_source(str(folder), "ruby")
    with pytest.raises(ValueError, match="neither a folder"):
        language_source(str(tmp_path / "nope"), "go")
    monkeypatch.setattr(corpus, "load_sequences",
                        functools.partial(corpus.load_sequences, corpora_dir=tmp_path / "corpora"))
    marker = {"go": "package ", "rust": "fn "}
    for source in (one, folder):
        params = {"corpus_source": str(source), "seed": 0, "eval_fraction": 0.25}
        seqs = stage.sequences(params, tok, ["go", "rust"], "score", 3, 64)
        assert params["_sequences"] == {"score/go": seqs["go"].info, "score/rust": seqs["rust"].info}  # for finish()
        assert params["_sequences"]["score/go"]["short_files"] == 0
        for lang, other in (("go", "rust"), ("rust", "go")):
            assert len(seqs[lang]) == 3 and seqs[lang].info["n_files"] == 3
            full = "".join(tok.decode(s.tolist()) for s in seqs[lang])
            assert all(full[:20] not in t for t in texts[other]) and any(marker[lang] in t for t in texts[lang])


# ----------------------------------------------------------------------------------------- modern English

_PAGE = """<page xmlns="http://projectmallard.org/1.0/" xmlns:if="http://projectmallard.org/if/1.0/"
      xmlns:its="http://www.w3.org/2005/11/its" type="topic" id="demo">
  <info>
    <credit type="author"><name>Someone</name></credit>
    <desc>Metadata, not prose.</desc>
  </info>
  <title>Connect to a network</title>
  <comment><p>Editorial note for writers.</p></comment>
  <p>Open the <gui>system menu</gui> and
     choose <guiseq><gui>Settings</gui><gui>Network</gui></guiseq>.</p>
  <steps>
    <item><p>Press <keyseq><key>Ctrl</key><key>C</key></keyseq> to copy the address.</p></item>
    <item><p>An icon (<media type="image" src="figures/x.svg"/>) shows the strength.</p></item>
  </steps>
  <if:choose>
    <if:when test="platform:gnome-classic"><p>Classic text.</p></if:when>
    <p>Default text.</p>
  </if:choose>
  <p>Type <cmd>nmcli device</cmd> and press <key>Enter</key>.</p>
  <code>*-network
   description: Wireless interface</code>
  <screen><output>$ </output><input>gsettings set a b</input></screen>
  <note style="tip"><p>Tips stay.</p></note>
</page>
"""


def test_mallard_text_keeps_prose_and_leaves_code_out():
    assert S.mallard_text(_PAGE) == (
        "Connect to a network\n\nOpen the system menu and choose Settings ▸ Network.\n\n"
        "Press Ctrl+C to copy the address.\n\nAn icon shows the strength.\n\nDefault text.\n\nTips stay.\n")
    assert S.mallard_text("<page><p>unclosed</page>") == ""


def test_english_modern_source_extracts_pages_offline(tmp_path):
    [src] = S.sources_for("english_modern")
    assert (src.kind, src.package, src.licence) == ("apt", "gnome-user-docs", "CC-BY-SA-3.0")
    help_dir = tmp_path / src.key / src.roots[0]  # an unpacked package already in the cache: nothing downloads
    help_dir.mkdir(parents=True)
    (help_dir / "demo.page").write_text(_PAGE)
    (help_dir / "empty.page").write_text("<page><info/><code>x = 1</code></page>")
    (help_dir / "legal.xml").write_text("<p>Licence.</p>")
    assert list(S.iter_files("english_modern", tmp_path)) == [
        ("gnome-user-docs/usr/share/help/C/gnome-help/demo.page", S.mallard_text(_PAGE))]
    assert "english_modern" in S.PROSE_LANGUAGES and clean_text("Plain prose.\n", "english_modern") == "Plain prose.\n"
