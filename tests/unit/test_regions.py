import numpy as np
import pytest
import torch

from spot_utils import load_masks, mask_count, save_masks, select_top_k
from spot_utils.method.selection import MASK_MODES, mask_mode, regions


def shared_core(masks_by_lang):
    """Naive reference: entries every language selects (a fold of logical and)."""
    names = next(iter(masks_by_lang.values()))
    return {n: torch.stack([m[n] for m in masks_by_lang.values()]).all(0) for n in names}


def union_of(masks_by_lang):
    """Naive reference: entries at least one language selects."""
    names = next(iter(masks_by_lang.values()))
    return {n: torch.stack([m[n] for m in masks_by_lang.values()]).any(0) for n in names}


def language_specific(masks_by_lang, lang):
    """Naive reference: the language's entries minus the union of the others'."""
    others = {l: m for l, m in masks_by_lang.items() if l != lang}
    if not others:
        return dict(masks_by_lang[lang])
    union = union_of(others)
    return {n: m & ~union[n] for n, m in masks_by_lang[lang].items()}


def t(*bits):
    return torch.tensor(bits, dtype=torch.bool)


@pytest.fixture
def three():
    # entries 0..5 of one tensor 'w' and 0..1 of 'b'; each language's top-k set by hand
    return {"go": {"w": t(1, 1, 0, 0, 1, 0), "b": t(1, 0)},
            "rust": {"w": t(1, 0, 1, 0, 1, 0), "b": t(0, 0)},
            "java": {"w": t(1, 1, 0, 1, 0, 0), "b": t(0, 1)}}


def test_shared_union_and_specific_on_a_hand_case(three):
    assert shared_core(three)["w"].tolist() == [True, False, False, False, False, False]
    assert shared_core(three)["b"].tolist() == [False, False]
    assert union_of(three)["w"].tolist() == [True, True, True, True, True, False]
    assert union_of(three)["b"].tolist() == [True, True]
    assert language_specific(three, "go")["w"].tolist() == [False] * 6
    assert language_specific(three, "go")["b"].tolist() == [True, False]
    assert language_specific(three, "rust")["w"].tolist() == [False, False, True, False, False, False]
    assert language_specific(three, "java")["w"].tolist() == [False, False, False, True, False, False]
    r = regions(three)
    assert set(r) == {"shared", "union", "specific:go", "specific:rust", "specific:java"}
    for name, ref in (("shared", shared_core(three)), ("union", union_of(three)),
                      *((f"specific:{l}", language_specific(three, l)) for l in three)):
        assert all(torch.equal(r[name][n], ref[n]) for n in ref), name
    # inputs are not modified in place
    assert three["go"]["w"].tolist() == [True, True, False, False, True, False]


def test_region_sizes_add_up_on_random_sets():
    gen = torch.Generator().manual_seed(0)
    scores = {lang: {"w": torch.rand(40, 30, generator=gen), "n": torch.rand(30, generator=gen)}
              for lang in ("a", "b", "c", "d")}
    masks = {lang: select_top_k(s, 20) for lang, s in scores.items()}
    r = regions(masks)
    # every union entry is in exactly one of: shared, some language's specific set, or in 2..n-1 languages
    member = sum(torch.cat([m["w"].flatten(), m["n"]]).long() for m in masks.values())
    assert mask_count(r["union"]) == int((member > 0).sum())
    assert mask_count(r["shared"]) == int((member == 4).sum())
    assert sum(mask_count(r[f"specific:{l}"]) for l in masks) == int((member == 1).sum())
    for lang in masks:  # a specific region lies inside its language and outside every other
        spec = r[f"specific:{lang}"]
        assert all(not (spec[n] & ~masks[lang][n]).any() for n in spec)
        assert all(not (spec[n] & masks[o][n]).any() for o in masks if o != lang for n in spec)


def test_single_language_regions_are_that_language():
    one = {"go": {"w": t(1, 0, 1)}}
    r = regions(one)
    assert r["shared"]["w"].tolist() == r["union"]["w"].tolist() == r["specific:go"]["w"].tolist() == [True, False, True]


def test_mask_modes_on_a_hand_case():
    region = {"w": t(1, 1, 0, 0), "norm": t(1, 0)}
    magnitude = {"w": t(0, 1, 1, 0), "norm": t(1, 1)}
    assert mask_mode(region, magnitude, "region")["w"].tolist() == [True, True, False, False]
    rm = mask_mode(region, magnitude, "region_minus_magnitude")
    assert rm["w"].tolist() == [True, False, False, False] and rm["norm"].tolist() == [False, False]
    mr = mask_mode(region, magnitude, "magnitude_minus_region")
    assert mr["w"].tolist() == [False, False, True, False] and mr["norm"].tolist() == [False, True]
    # a matrices-only region against an all-tensor magnitude mask still covers every tensor
    assert mask_mode({"w": t(1, 1, 0, 0)}, magnitude, "magnitude_minus_region")["norm"].tolist() == [True, True]
    assert set(MASK_MODES) == {"region", "region_minus_magnitude", "magnitude_minus_region"}
    with pytest.raises(ValueError, match="unknown mask mode"):
        mask_mode(region, magnitude, "both")


def test_regions_round_trip_through_disk(tmp_path, three):
    for kind, masks in regions(three).items():
        save_masks(tmp_path / f"{kind}.safetensors", masks, {"kind": kind})
        back, manifest = load_masks(tmp_path / f"{kind}.safetensors")
        assert manifest["kind"] == kind and manifest["total"] == mask_count(masks)
        assert all(torch.equal(back[n], masks[n]) for n in masks)


def test_regions_need_a_language():
    with pytest.raises(ValueError, match="at least one"):
        regions({})


def stable_sort_reference(scores, k, granularity):
    """Top-k by a stable sort of −value over the entries in (name, flat index) order: the tie rule of docs/METHOD.md, Tie order."""
    out = {}
    if granularity == "per_tensor":
        for n, s in scores.items():
            order = np.argsort(-s.flatten().numpy(), kind="stable")[: int(k / 100 * s.numel())]
            out[n] = set(order.tolist())
        return {(n, i) for n, idx in out.items() for i in idx}
    names = sorted(scores)
    flat = np.concatenate([scores[n].flatten().numpy() for n in names])
    owner = np.concatenate([[j] * scores[n].numel() for j, n in enumerate(names)])
    offset = np.cumsum([0] + [scores[n].numel() for n in names])
    order = np.argsort(-flat, kind="stable")[: int(k / 100 * len(flat))]
    return {(names[owner[o]], int(o - offset[owner[o]])) for o in order}


@pytest.mark.parametrize("path", ["kth", "bracket", "radix"])
@pytest.mark.parametrize("granularity", ["global", "per_tensor"])
def test_every_threshold_path_agrees_with_a_sort(monkeypatch, path, granularity):
    from spot_utils.method import selection
    used = []
    if path != "kth":
        monkeypatch.setattr(selection, "_SMALL", 0)  # skip the k-th value path
    bracket = selection._bracketed_threshold
    monkeypatch.setattr(selection, "_bracketed_threshold",
                        (lambda *a: used.append(bracket(*a)) or used[-1]) if path == "bracket" else (lambda *a: None))
    gen = torch.Generator().manual_seed(3)
    scores = {"layers.1.w": torch.randn(300, 200, generator=gen),
              "layers.0.w": torch.randint(-3, 4, (200, 200), generator=gen).float() * 1e-3,  # heavy ties
              "layers.0.norm": torch.randn(200, generator=gen), "layers.2.b": -torch.zeros(50)}
    for k in (0.01, 0.5, 7, 33.3, 80):
        got = select_top_k(scores, k, granularity)
        assert {(n, i) for n, m in got.items() for i in m.flatten().nonzero().flatten().tolist()} == \
            stable_sort_reference(scores, k, granularity), k
    if path == "bracket":
        assert any(u is not None for u in used) and any(u is None for u in used)  # taken, and fell back at least once


def test_stage_masks_language_masks_and_regions_from_disk_are_consistent(tmp_path):
    from spot_utils import load_masks, save_masks
    from spot_utils.base.run_files import Lazy
    from spot_utils.method.selection import iter_regions, language_masks, stage_masks
    gen = torch.Generator().manual_seed(0)
    shapes = {"layers.0.w": (20, 10), "layers.0.norm": (10,)}
    lang_scores = {l: {n: torch.randn(s, generator=gen) for n, s in shapes.items()} for l in ("go", "rust", "java")}
    A = {n: sum(lang_scores[l][n].abs() for l in lang_scores) for n in shapes}
    G = {n: torch.rand(s, generator=gen) for n, s in shapes.items()}
    W = {n: torch.rand(s, generator=gen) for n, s in shapes.items()}
    got = dict(stage_masks(A, G, W, 10))
    assert set(got) == {"spot", "magnitude_global", "spot_region_minus_magnitude", "spot_magnitude_minus_region",
                        "general", "code_over_general", "code_minus_general"}
    reads = []
    lazy_scores = Lazy(lang_scores, lambda s: reads.append(1) or {n: t.abs() for n, t in s.items()})
    for lang, k, masks in language_masks(lazy_scores, [10, 5]):
        save_masks(tmp_path / f"{lang}_k{k}.safetensors", masks, {})
        got[f"lang_{lang}" if k == 10 else f"lang5_{lang}"] = masks
    assert len(reads) == 3  # each language's scores read once for every k
    assert mask_count(got["general"]) == mask_count(got["lang_go"]) == 21
    assert mask_count(got["spot"]) == 20 and not got["spot"]["layers.0.norm"].any()  # the global spot: 2-D matrices only
    assert mask_count(got["lang5_go"]) == 10
    assert set(got["code_over_general"]) == {"layers.0.w"}  # contrastive regions: matrices only
    inter = mask_count(got["spot"]) - mask_count(got["spot_region_minus_magnitude"])
    assert mask_count(got["spot_magnitude_minus_region"]) == mask_count(got["magnitude_global"]) - inter
    from spot_utils.method.masks import MaskFile

    class Counted(MaskFile):  # a mask file that records every tensor read from it
        def __getitem__(self, name):
            loads.append((self.path.name, name))
            return super().__getitem__(name)
    loads = []
    got.update(iter_regions({l: Counted(tmp_path / f"{l}_k10.safetensors") for l in lang_scores}))
    assert sorted(loads) == sorted([(f"{l}_k10.safetensors", n) for l in lang_scores for n in shapes] * 2)
    read = [n for _, n in loads]
    assert read == sorted(read, key=read.index)  # tensor by tensor: a tensor's reads all come before the next's
    by_lang = {l: got[f"lang_{l}"] for l in lang_scores}
    for kind in ("shared", "union", "specific:go", "specific:java"):
        ref = {"shared": shared_core, "union": union_of}.get(kind, lambda m: language_specific(m, kind.split(":")[1]))(by_lang)
        assert all(torch.equal(got[kind][n], ref[n]) for n in shapes), kind


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("pos", [0, 4, 9])
def test_non_finite_scores_are_rejected_wherever_they_sit(bad, pos):
    x = torch.rand(10)
    x[pos] = bad
    with pytest.raises(ValueError, match="'w'"):
        select_top_k({"ok": torch.rand(3), "w": x}, 50)


def test_rank_mean_on_a_hand_case():
    from spot_utils import aggregate
    # |go| = [1, 3, 3, 0] -> ranks among 4 entries (ties share the lower): [1, 2, 2, 0] / 3; |rust| = [4, 2, 1, 3] -> [3, 1, 0, 2] / 3
    s = {"go": {"w": torch.tensor([1.0, -3.0]), "n": torch.tensor([3.0, 0.0])},
         "rust": {"w": torch.tensor([-4.0, 2.0]), "n": torch.tensor([1.0, 3.0])}}
    a = aggregate(s, "rank_mean")
    torch.testing.assert_close(a["w"], torch.tensor([(1 + 3) / 6, (2 + 1) / 6]))
    torch.testing.assert_close(a["n"], torch.tensor([(2 + 0) / 6, (0 + 2) / 6]))
