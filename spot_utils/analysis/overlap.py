"""Overlap between top-k sets and its significance against chance (docs/METHOD.md, Overlap statistics).

Two nulls for the overlap |A ∩ B| of two sets of given sizes:
* uniform: A is a uniform random subset of all N entries -> one hypergeometric;
* per tensor: A is random within every tensor, with A's count per tensor -> a sum of independent per-tensor
  hypergeometrics, computed by exact convolution of their pmfs while that is cheap (≤ EXACT_WORK_LIMIT
  multiply-adds), else by a normal approximation with continuity correction; the `null_method` column says which.
The permutation check draws the overlap of randomly permuted sets directly from its (per-tensor or uniform)
permutation distribution, which is the same distribution as shuffling the entries, at O(tensors) cost a draw.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
import tempfile
from typing import Callable

import numpy as np
import pandas as pd
from scipy.stats import hypergeom, norm
import torch

from ..base.run_files import HALVES, TensorFile, tensors_of
from ..method.aggregation import aggregate, aggregate_to_file
from ..method.selection import View, select_top_k
from .stats import holm

EXACT_WORK_LIMIT = 3e8  # multiply-adds of the exact convolution above which the normal approximation is used


class Packed:
    """A boolean mask tensor held bit-packed (1 bit per entry, np.packbits little-endian): what the functions
    here need of a tensor (shape, ndim, numel(), sum()), at 1/8 of its memory."""

    __slots__ = ("bits", "shape")

    def __init__(self, mask: torch.Tensor):
        self.bits = np.packbits(mask.cpu().numpy().reshape(-1), bitorder="little")
        self.shape = tuple(mask.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def numel(self) -> int:
        return math.prod(self.shape)

    def sum(self) -> int:
        return _popcount(self.bits)

    def flat(self) -> torch.Tensor:
        """The mask, unpacked and flattened."""
        return torch.from_numpy(np.unpackbits(self.bits, count=self.numel(), bitorder="little").astype(bool))


def packed(masks: dict[str, torch.Tensor]) -> dict[str, Packed]:
    """Masks held bit-packed: e.g. every language's top-k at once for the pairwise statistics."""
    return {n: Packed(m) for n, m in masks.items()}


def _flat(m) -> torch.Tensor:
    return m.flat() if isinstance(m, Packed) else m.reshape(-1)


def intersection(a: dict, b: dict) -> int:
    """|a ∩ b| of two masks, tensors or Packed (a tensor missing from one counts as all False)."""
    total = 0
    for n in a.keys() & b.keys():
        x, y = a[n], b[n]
        if x.shape != y.shape:
            raise ValueError(f"masks of {n!r} have different shapes {tuple(x.shape)} and {tuple(y.shape)}")
        if isinstance(x, Packed) and isinstance(y, Packed):
            total += _popcount(x.bits & y.bits)  # padding bits are 0 in both
        else:
            total += int((_flat(x) & _flat(y)).sum())
    return total


def _count(masks: dict) -> int:
    return sum(int(m.sum()) for m in masks.values())


def jaccard(a: dict, b: dict) -> float:
    inter = intersection(a, b)
    union = _count(a) + _count(b) - inter
    return inter / union if union else 0.0


def overlap_coefficient(a: dict, b: dict) -> float:
    smaller = min(_count(a), _count(b))
    return intersection(a, b) / smaller if smaller else 0.0


def uniform_null(n_total: int, size_a: int, size_b: int, observed: int) -> tuple[float, float]:
    """(expected overlap, P(overlap ≥ observed)) when B is a uniform random set over all entries."""
    expected = size_a * size_b / n_total
    return expected, float(hypergeom.sf(observed - 1, n_total, size_a, size_b))


def per_tensor_null(counts: np.ndarray, observed: int, exact_work_limit: float = EXACT_WORK_LIMIT) -> dict:
    """Expected overlap, its sd, P(overlap ≥ observed) and the method ('exact' or 'normal') under the per-tensor null.

    counts: rows (n_t, a_t, b_t). The overlap is Σ_t X_t with independent X_t ~ Hypergeom(n_t, b_t, a_t).
    """
    n, a, b = (counts[:, i].astype(np.float64) for i in range(3))
    live = (a > 0) & (b > 0)
    n, a, b = n[live], a[live], b[live]
    mean = float((a * b / n).sum())
    var = float((a * b * (n - a) * (n - b) / (n * n * np.maximum(n - 1, 1))).sum())
    lo = np.maximum(0, a + b - n).astype(np.int64)
    hi = np.minimum(a, b).astype(np.int64)
    widths = hi - lo + 1
    work = float((np.cumsum(widths) * widths).sum())
    if work <= exact_work_limit:
        pmf, offset = np.ones(1), 0
        for nt, at, bt, l, h in zip(n, a, b, lo, hi):
            pmf = np.convolve(pmf, hypergeom.pmf(np.arange(l, h + 1), int(nt), int(bt), int(at)))
            offset += int(l)
        i = observed - offset
        p = 1.0 if i <= 0 else float(pmf[i:].sum()) if i < len(pmf) else 0.0
        return dict(expected=mean, sd=math.sqrt(var), p=min(p, 1.0), method="exact")
    sd = math.sqrt(var)
    p = float(norm.sf((observed - 0.5 - mean) / sd)) if sd > 0 else float(observed <= mean)
    return dict(expected=mean, sd=sd, p=p, method="normal")


def simulate_overlap(counts: np.ndarray, n_draws: int, null: str = "per_tensor", seed: int = 0) -> np.ndarray:
    """Overlaps of n_draws random permutations of A (within tensors, or over all entries) with B."""
    rng = np.random.default_rng(seed)
    n, a, b = counts[:, 0], counts[:, 1], counts[:, 2]
    if null == "uniform":
        total = int(n.sum())
        return rng.hypergeometric(int(b.sum()), total - int(b.sum()), int(a.sum()), size=n_draws)
    if null != "per_tensor":
        raise ValueError(f"unknown null {null!r}; accepted: uniform, per_tensor")
    out = np.zeros(n_draws, dtype=np.int64)
    for nt, at, bt in zip(n, a, b):
        if at > 0 and bt > 0:
            out += rng.hypergeometric(int(bt), int(nt - bt), int(at), size=n_draws)
    return out


def _sizes(masks: dict) -> dict[str, tuple[int, int]]:
    return {n: (m.numel(), int(m.sum())) for n, m in masks.items()}


def _counts(sizes_a: dict, sizes_b: dict) -> np.ndarray:
    """int64 rows (n_t, |A_t|, |B_t|) over the tensors of either mask."""
    names = list(sizes_a) + [n for n in sizes_b if n not in sizes_a]
    return np.array([(sizes_a.get(n, sizes_b.get(n))[0], sizes_a.get(n, (0, 0))[1], sizes_b.get(n, (0, 0))[1])
                     for n in names], dtype=np.int64).reshape(-1, 3)


def compare(a: dict, b: dict, n_permutations: int = 0, seed: int = 0, _sizes_ab: tuple | None = None) -> dict:
    """Overlap of two masks with observed/expected and p under both nulls (and the permutation check if asked)."""
    counts = _counts(*(_sizes_ab or (_sizes(a), _sizes(b))))
    n_total = int(counts[:, 0].sum())
    size_a, size_b = int(counts[:, 1].sum()), int(counts[:, 2].sum())
    inter = intersection(a, b)
    union = size_a + size_b - inter
    expected, p = uniform_null(n_total, size_a, size_b, inter)
    pt = per_tensor_null(counts, inter)
    row = dict(size_a=size_a, size_b=size_b, intersection=inter, jaccard=inter / union if union else 0.0,
               overlap=inter / min(size_a, size_b) if min(size_a, size_b) else 0.0,
               expected_uniform=expected, obs_over_exp=inter / expected if expected else float("nan"), p_uniform=p,
               expected_per_tensor=pt["expected"], sd_per_tensor=pt["sd"],
               obs_over_exp_per_tensor=inter / pt["expected"] if pt["expected"] else float("nan"),
               z_per_tensor=(inter - pt["expected"]) / pt["sd"] if pt["sd"] else float("nan"),
               p_per_tensor=pt["p"], null_method=pt["method"])
    if n_permutations:
        for null in ("uniform", "per_tensor"):
            draws = simulate_overlap(counts, n_permutations, null, seed)
            row[f"perm_mean_{null}"] = float(draws.mean())
            row[f"p_perm_{null}"] = (1 + int((draws >= inter).sum())) / (n_permutations + 1)
    return row


def _with_holm(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for col in ("p_uniform", "p_per_tensor"):
        df[f"{col}_holm"] = holm(df[col]) if len(df) else []
    return df


def pairwise(masks_by_lang: dict[str, dict], n_permutations: int = 0, seed: int = 0) -> pd.DataFrame:
    """One row per language pair: sizes, intersection, Jaccard, overlap coefficient, observed/expected and p under
    both nulls (Holm-corrected across pairs), and the permutation check when n_permutations > 0."""
    sizes = {lang: _sizes(m) for lang, m in masks_by_lang.items()}
    return _with_holm([dict(a=la, b=lb, **compare(masks_by_lang[la], masks_by_lang[lb], n_permutations, seed,
                                                  (sizes[la], sizes[lb])))
                       for la, lb in itertools.combinations(masks_by_lang, 2)])


def against(masks_by_lang: dict[str, dict], reference: dict, label: str, n_permutations: int = 0,
            seed: int = 0) -> pd.DataFrame:
    """Each language's overlap with one reference mask (e.g. magnitude_global or the general-text top-k)."""
    ref_sizes = _sizes(reference)
    return _with_holm([dict(language=lang, reference=label,
                            **compare(m, reference, n_permutations, seed, (_sizes(m), ref_sizes)))
                       for lang, m in masks_by_lang.items()])


def membership_patterns(masks_by_lang: dict[str, dict]) -> pd.DataFrame:
    """UpSet table: for every combination of languages, the number of entries selected by exactly those languages.

    Columns: languages (tuple), degree (how many languages), count; sorted by count, largest first.
    """
    langs = list(masks_by_lang)
    if len(langs) > 62:
        raise ValueError("membership_patterns supports at most 62 languages")
    totals: dict[int, int] = {}
    for name in masks_by_lang[langs[0]]:
        code = torch.zeros(masks_by_lang[langs[0]][name].numel(), dtype=torch.int64)
        for i, lang in enumerate(langs):
            code |= _flat(masks_by_lang[lang][name]).to(torch.int64) << i
        values, counts = torch.unique(code[code > 0], return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist()):
            totals[v] = totals.get(v, 0) + c
    rows = [dict(languages=tuple(l for i, l in enumerate(langs) if v >> i & 1), degree=bin(v).count("1"), count=c)
            for v, c in totals.items()]
    return pd.DataFrame(rows, columns=["languages", "degree", "count"]).sort_values(
        ["count", "degree"], ascending=[False, False], ignore_index=True)


# --- stability between two disjoint halves of the score split -----------------------------------------------

def chance_jaccard(n_total: int, size: int) -> float:
    """Expected Jaccard of two uniform random sets of `size` entries among n_total (first order)."""
    inter = size * size / n_total
    return inter / (2 * size - inter) if size else 0.0


_BITS_SET = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount(packed: np.ndarray) -> int:
    """Number of set bits in a uint8 array (numpy < 2 has no bitwise_count)."""
    return int(_BITS_SET[packed].sum(dtype=np.int64))


def _half_masks(load_half, half, languages, k_grid, per_language_k, method, granularity):
    """(subset, k, masks) of one half: the aggregate's top-k at every k, then each language's at per_language_k.

    From score files, everything is read tensor by tensor: the half's aggregate is written to a temporary file
    beside them (deleted after) and selected from there, each language's |S| is read from its file on access."""
    sources = {lang: load_half(half, lang) for lang in languages}
    from_files = all(isinstance(v, (str, Path)) for v in sources.values())
    with tempfile.TemporaryDirectory(dir=Path(next(iter(sources.values()))).parent if from_files else None) as tmp:
        agg = (aggregate_to_file(sources, Path(tmp) / "aggregate.safetensors", method, {"kind": "half_aggregate"})
               if from_files else aggregate(sources, method))
        for k in k_grid:
            yield "aggregate", k, select_top_k(agg, k, granularity)
        del agg
    for lang in languages if per_language_k else []:
        source = load_half(half, lang)
        absolute = (View(TensorFile(source), fn=lambda n, t: t.abs()) if isinstance(source, (str, Path))
                    else {n: s.abs() for n, s in tensors_of(source).items()})
        for k in per_language_k:
            yield lang, k, select_top_k(absolute, k, granularity)


def stability(load_half: Callable[[str, str], dict], languages: list[str], k_grid: list[float],
              per_language_k: list[float] | None = None, method: str = "sum_abs",
              granularity: str = "global") -> pd.DataFrame:
    """Jaccard between the top-k sets computed from each half of the score split, per k.

    load_half(half, lang) -> that half's signed scores, or the path of its score file (then one language's
    scores are in memory at a time: load_half=lambda h, l: runs.scores_path(params, l, h)). Rows: subset
    ('aggregate' or a language), k_percent, size, intersection, jaccard, jaccard_chance (two random sets of that
    size). Languages are compared at per_language_k (default: every k). The first half's masks are kept
    bit-packed (1 bit per entry) until the second half's are ready; from files, memory holds a few tensors
    besides (_half_masks).
    """
    per_language_k = k_grid if per_language_k is None else per_language_k
    first, rows = {}, []
    for half in HALVES:
        for subset, k, masks in _half_masks(load_half, half, languages, k_grid, per_language_k, method, granularity):
            packed = {n: bits.numpy() for n, bits in masks.packed.items()}  # select_top_k's masks are bit-packed
            if half == HALVES[0]:
                first[(subset, k)] = packed
                continue
            a = first.pop((subset, k))
            inter = sum(_popcount(a[n] & packed[n]) for n in packed)
            size_a, size_b = sum(map(_popcount, a.values())), sum(map(_popcount, packed.values()))
            union = size_a + size_b - inter
            rows.append(dict(subset=subset, k_percent=k, size=size_a, intersection=inter,
                             jaccard=inter / union if union else 0.0,
                             jaccard_chance=chance_jaccard(sum(math.prod(s) for s in masks.shapes.values()), size_a)))
    return pd.DataFrame(rows)
