"""Aggregation and overlap from files, one language at a time: the same results as from tensors in memory."""
import gc
import weakref

import pandas as pd
import pytest
import torch

from spot_utils import aggregate

from spot_utils.base import run_files as runs
from spot_utils.method.aggregation import AGGREGATIONS, Aggregator
from spot_utils.analysis.overlap import Packed, membership_patterns, packed, pairwise, stability
from spot_utils.method.selection import select_top_k

SHAPES = {"layers.0.w": (30, 20), "layers.0.norm": (20,), "layers.1.w": (20, 30)}
LANGS = ("go", "rust", "java", "ruby")


def scores(seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = {l: {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()} for l in LANGS}
    out["rust"]["layers.0.norm"][:5] = 0.0  # ties
    return out


def written(tmp_path, by_lang, dtype="float32"):
    paths = {}
    for lang, s in by_lang.items():
        paths[lang] = tmp_path / "scores" / f"{lang}.safetensors"
        runs.save_tensors(paths[lang], s, {"language": lang}, dtype)
    return paths


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_aggregate_of_files_equals_aggregate_of_tensors(tmp_path, method):
    s = scores()
    from_files = aggregate(written(tmp_path, s), method)
    in_memory = aggregate(s, method)
    assert set(from_files) == set(in_memory)
    assert all(torch.equal(from_files[n], in_memory[n]) for n in in_memory)
    mixed = aggregate({**s, "go": tmp_path / "scores" / "go.safetensors"}, method)
    assert all(torch.equal(mixed[n], in_memory[n]) for n in in_memory)


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_bfloat16_files_aggregate_like_rounded_tensors(tmp_path, method):
    s = scores()
    rounded = {l: {n: t.bfloat16().float() for n, t in d.items()} for l, d in s.items()}
    from_files = aggregate(written(tmp_path, s, "bfloat16"), method)
    assert all(torch.equal(from_files[n], t) for n, t in aggregate(rounded, method).items())


def test_files_are_read_one_language_at_a_time(tmp_path, monkeypatch):
    paths = written(tmp_path, scores())
    alive, peak = [], [0]
    load = runs.load_tensors

    def tracked(path):
        gc.collect()
        out = load(path)
        alive.extend(weakref.ref(t) for t in out[0].values())
        peak[0] = max(peak[0], len({id(r()) for r in alive if r() is not None}))
        return out
    monkeypatch.setattr(runs, "load_tensors", tracked)
    aggregate(paths, "rank_mean")
    assert peak[0] == len(SHAPES)  # never two languages' tensors alive at once


def test_aggregator_refuses_mismatched_or_missing_languages():
    s = scores()
    folder = Aggregator("sum_abs", 2)
    folder.add("go", s["go"])
    with pytest.raises(ValueError, match="1 of 2 languages"):
        folder.result()
    with pytest.raises(ValueError, match="other parameters than those of 'go'"):
        folder.add("rust", {"layers.0.w": s["rust"]["layers.0.w"]})
    with pytest.raises(ValueError, match="unknown aggregation"):
        Aggregator("mean", 2)


def test_pairwise_and_patterns_from_packed_masks_equal_those_from_tensors():
    masks = {l: select_top_k({n: t.abs() for n, t in d.items()}, 20) for l, d in scores().items()}
    bits = {l: packed(m) for l, m in masks.items()}
    assert all(isinstance(p, Packed) and p.sum() == int(masks[l][n].sum()) and torch.equal(p.flat(), masks[l][n].flatten())
               for l, d in bits.items() for n, p in d.items())
    pd.testing.assert_frame_equal(pairwise(bits, 50, seed=1), pairwise(masks, 50, seed=1))
    pd.testing.assert_frame_equal(membership_patterns(bits), membership_patterns(masks))


def test_stability_from_paths_equals_stability_from_tensors(tmp_path):
    halves = {"half_a": scores(0), "half_b": scores(1)}
    paths = {h: written(tmp_path / h, s) for h, s in halves.items()}
    from_paths = stability(lambda h, l: paths[h][l], list(LANGS), [1.0, 10.0])
    pd.testing.assert_frame_equal(from_paths, stability(lambda h, l: halves[h][l], list(LANGS), [1.0, 10.0]))


@pytest.mark.parametrize("method", AGGREGATIONS)
def test_streamed_stage_02_writes_the_bytes_of_the_in_memory_one(tmp_path, method):
    from spot_utils.method.aggregation import aggregate_files
    from spot_utils.method.selection import general_reference
    from spot_utils.report.plots import sample_abs
    s = scores()
    general = {n: torch.randn(sh, generator=torch.Generator().manual_seed(7)) for n, sh in SHAPES.items()}
    paths = written(tmp_path, s)
    general_file = tmp_path / "scores" / "english.safetensors"
    runs.save_tensors(general_file, general, {"language": "english"})
    manifests = ({"kind": "aggregate"}, {"kind": "general"})
    out = aggregate_files(paths, general_file, tmp_path / "a" / "A.safetensors", tmp_path / "a" / "G.safetensors",
                          method, manifests, sample=500, gen=torch.Generator().manual_seed(0))
    A, G = aggregate(s, method), general_reference(general, len(LANGS), method)
    runs.save_tensors(tmp_path / "b" / "A.safetensors", A, manifests[0])
    runs.save_tensors(tmp_path / "b" / "G.safetensors", G, manifests[1])
    for name in ("A", "G"):
        assert (tmp_path / "a" / f"{name}.safetensors").read_bytes() == (tmp_path / "b" / f"{name}.safetensors").read_bytes()
    assert runs.read_json(tmp_path / "a" / "index.json") == runs.read_json(tmp_path / "b" / "index.json")
    gen = torch.Generator().manual_seed(0)  # the notebook's in-memory order: each file's tensors as read
    loaded = {l: runs.load_tensors(p)[0] for l, p in paths.items()}
    expected = {**{l: sample_abs(loaded[l], 500, gen) for l in LANGS},
                "general": sample_abs(runs.load_tensors(general_file)[0], 500, gen),
                "aggregate": sample_abs(runs.load_tensors(tmp_path / "b" / "A.safetensors")[0], 500, gen)}
    assert list(out["samples"]) == list(expected)
    assert all(torch.equal(out["samples"][k], v) for k, v in expected.items())
    assert out["totals"] == {l: float(sum(t.abs().double().sum() for t in s[l].values())) for l in LANGS}


def test_tensor_writer_matches_save_file_and_refuses_bad_input(tmp_path):
    from safetensors.torch import save_file
    gen = torch.Generator().manual_seed(3)
    tensors = {"b.w": torch.randn(3, 5, generator=gen), "a": torch.randn(7, generator=gen), "empty": torch.zeros(0, 4),
               "é": torch.randn(2, generator=gen)}
    for dtype in (torch.float32, torch.bfloat16):
        typed = {n: t.to(dtype) for n, t in tensors.items()}
        meta = {"manifest": '{"x": "a\\"b\\n\\u00e9"}'}
        save_file(typed, str(tmp_path / "ref.safetensors"), metadata=meta)
        with runs.TensorWriter(tmp_path / "mine.safetensors", {n: t.shape for n, t in typed.items()}, meta, dtype) as w:
            for n in reversed(list(typed)):  # any order
                w.write(n, typed[n])
        assert (tmp_path / "mine.safetensors").read_bytes() == (tmp_path / "ref.safetensors").read_bytes()
    with pytest.raises(ValueError, match="never written"):
        with runs.TensorWriter(tmp_path / "partial.safetensors", {"a": (7,), "b": (1,)}, {}) as w:
            w.write("a", tensors["a"])
    assert not list(tmp_path.glob("*partial*"))
    with pytest.raises(ValueError, match="shape"):
        with runs.TensorWriter(tmp_path / "bad.safetensors", {"a": (6,)}, {}) as w:
            w.write("a", tensors["a"])


def test_drop_half_scores_deletes_the_halves_and_their_index_entries(tmp_path, monkeypatch):
    from spot_utils.experiment.params import validate
    monkeypatch.setattr(runs, "RUNS_DIR", tmp_path)
    s = scores()
    for lang in ("go", "rust"):
        runs.save_tensors(runs.scores_path("r", lang), s[lang], {})
        for half in runs.HALVES:
            runs.save_tensors(runs.scores_path("r", lang, half), s[lang], {})
    size = sum(runs.scores_path("r", "go", h).stat().st_size for h in runs.HALVES)
    assert runs.drop_half_scores("r", ["go"]) == size
    assert not any(runs.scores_path("r", "go", h).exists() for h in runs.HALVES)
    assert all(runs.is_complete(runs.scores_path("r", "rust", h)) for h in runs.HALVES)  # other languages kept
    assert all("go.safetensors" not in runs.read_json(runs.scores_path("r", "go", h).parent / "index.json")
               for h in runs.HALVES)
    assert runs.is_complete(runs.scores_path("r", "go"))  # the full score stays
    with pytest.raises(ValueError, match="keep_halves"):
        validate({"keep_halves": "no"})
