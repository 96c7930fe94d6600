"""Exact top-k% selection with a total tie order, and the regions derived from it (docs/METHOD.md, Selection).

Entries are ranked by (value descending, parameter name ascending, flat index ascending), compared as int32
keys with the float order. The threshold (the m-th largest key) comes from one pass that brackets it between two
quantiles of a random sample and keeps only the keys inside the bracket; if the bracket misses (or holds too many
keys, e.g. huge ties), a two-pass radix select over the key bits (16 high, then 16 low) finds it. Either way global
selection never holds a second full-size copy of the scores; the sample only affects speed, never the result.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import math
import numbers

import torch

from .aggregation import aggregate
from .masks import mask_minus

GRANULARITIES = ("global", "per_tensor")
_CHUNK = 1 << 24  # entries processed at a time: bounds temporary memory
_SMALL = 1 << 21  # up to this many entries the threshold comes from one k-th value over a copy of the keys


def check_k(k_percent: float) -> float:
    if not isinstance(k_percent, numbers.Real) or isinstance(k_percent, bool):
        raise TypeError(f"k_percent must be a number (a percentage: 1.0 means 1%), got {k_percent!r}")
    k = float(k_percent)
    if not (0.0 < k < 100.0) or math.isnan(k):
        raise ValueError(f"k_percent must be in (0, 100) (a percentage: 1.0 means 1%), got {k_percent!r}")
    return k


def _order_keys(x: torch.Tensor) -> torch.Tensor:
    """int32 keys whose signed order equals the float order of x (-0.0 folded onto +0.0)."""
    bits = (x.float() + 0.0).view(torch.int32)
    return bits ^ ((bits >> 31) & 0x7FFFFFFF)


def _key_value(key: int) -> float:
    """The float32 value (as a Python float) whose order key is `key`: comparisons on values then match keys."""
    k = torch.tensor([key], dtype=torch.int32)
    return float((k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32))


def _chunks(t: torch.Tensor):
    flat = t.reshape(-1)
    for lo in range(0, flat.numel(), _CHUNK):
        yield _order_keys(flat[lo: lo + _CHUNK])


def _threshold_key(tensors: list[torch.Tensor], m: int) -> tuple[int, int]:
    """(key of the m-th largest entry, number of entries with a larger key); m ≥ 1."""
    total = sum(t.numel() for t in tensors)
    if total <= _SMALL:  # small inputs: a copy of their keys is cheap
        keys = torch.cat([_order_keys(t.reshape(-1)) for t in tensors])
        key = int(torch.topk(keys, m, sorted=False).values.min() if 2 * m <= total
                  else torch.kthvalue(keys, total - m + 1).values)
        return key, int((keys > key).sum())
    return _bracketed_threshold(tensors, m, total) or _radix_threshold(tensors, m)


def _bracketed_threshold(tensors: list[torch.Tensor], m: int, total: int) -> tuple[int, int] | None:
    """One pass: bracket the m-th largest key between two quantiles of a random sample, count the keys above the
    bracket and keep only those inside it (a small buffer). None if the bracket misses or holds too many keys."""
    gen = torch.Generator().manual_seed(0)
    n_sample = max(1 << 16, min(1 << 23, total >> 8))
    sample = torch.cat([_order_keys(t.reshape(-1)[torch.randint(0, t.numel(), (max(1, round(n_sample * t.numel() / total)),),
                                                                 generator=gen)]) for t in tensors if t.numel()])
    sample = sample.sort(descending=True).values
    q = m / total
    spread = 6 * math.sqrt(len(sample) * q * (1 - q)) + 4
    top, bottom = math.floor(q * len(sample) - spread), math.ceil(q * len(sample) + spread)
    hi = _key_value(int(sample[top])) if top >= 0 else math.inf  # values > hi are counted, in [lo, hi] kept
    lo = _key_value(int(sample[bottom])) if bottom < len(sample) else -math.inf
    cap = max(_SMALL, total >> 6)
    above, inside, kept = 0, [], 0
    for t in tensors:
        flat = t.reshape(-1)
        for start in range(0, flat.numel(), _CHUNK):
            values = flat[start: start + _CHUNK].float()
            high = values[values >= lo]  # ≈ the top k% plus the bracket: one full-size comparison per chunk
            above += int((high > hi).sum())
            between = _order_keys(high[high <= hi])
            kept += len(between)
            if above >= m or kept > cap:
                return None
            inside.append(between)
    if above + kept < m:
        return None
    inside = torch.cat(inside)
    key = int(torch.kthvalue(inside, kept - (m - above) + 1).values)
    return key, above + int((inside > key).sum())


def _radix_threshold(tensors: list[torch.Tensor], m: int) -> tuple[int, int]:
    """Two-pass radix select over the key bits (16 high, then 16 low): exact whatever the distribution."""
    hist = torch.zeros(1 << 16, dtype=torch.int64)
    for t in tensors:
        for keys in _chunks(t):
            hist += torch.bincount(((keys >> 16) + 32768).long(), minlength=1 << 16).cpu()  # scores may be on a GPU
    above_hi = torch.flip(hist, [0]).cumsum(0)  # count of entries with high bits ≥ bin (from the top)
    pos = int(torch.searchsorted(above_hi, torch.tensor(m)))
    hi = (1 << 16) - 1 - pos
    greater = int(above_hi[pos - 1]) if pos > 0 else 0
    hist_lo = torch.zeros(1 << 16, dtype=torch.int64)
    for t in tensors:
        for keys in _chunks(t):
            in_bin = keys[((keys >> 16) + 32768) == hi]
            hist_lo += torch.bincount((in_bin & 0xFFFF).long(), minlength=1 << 16).cpu()
    above_lo = torch.flip(hist_lo, [0]).cumsum(0)
    pos_lo = int(torch.searchsorted(above_lo, torch.tensor(m - greater)))
    lo = (1 << 16) - 1 - pos_lo
    greater += int(above_lo[pos_lo - 1]) if pos_lo > 0 else 0
    key = ((hi - 32768) << 16) | lo
    return key, greater


def _mask_at_threshold(t: torch.Tensor, key: int, ties: int) -> tuple[torch.Tensor, int]:
    """Entries above `key`, plus the first `ties` entries equal to it; returns (mask, ties used)."""
    values, threshold = t.float(), _key_value(key)
    mask = values > threshold
    if ties > 0:
        equal = (values == threshold).reshape(-1).nonzero().squeeze(1)[:ties]
        mask.reshape(-1)[equal] = True
        ties = len(equal)
    return mask, ties


def _check_finite(scores: dict[str, torch.Tensor]) -> None:
    for n, s in scores.items():  # min and max propagate NaN: one pass, no full-size temporary
        if s.numel() and not all(math.isfinite(float(v)) for v in torch.aminmax(s.reshape(-1))):
            raise ValueError(f"score of {n!r} contains NaN or inf")


def select_top_k(scores: dict[str, torch.Tensor], k_percent: float, granularity: str = "global") -> dict[str, torch.Tensor]:
    """Boolean masks of the top k% entries: ⌊k/100·N⌋ over all entries (global) or ⌊k/100·n_t⌋ per tensor.

    Args:
        scores: {parameter name: values}; larger is selected first, ties broken by (name, flat index).
        k_percent: in (0, 100].
        granularity: 'global' or 'per_tensor'.

    Returns:
        {parameter name: bool mask of the tensor's shape}.
    """
    k = check_k(k_percent)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; accepted: {GRANULARITIES}")
    if not scores:
        raise ValueError("select_top_k got no scores to select from")
    _check_finite(scores)
    if granularity == "per_tensor":
        largest = max(s.numel() for s in scores.values())
        if math.floor(k / 100 * largest) == 0:
            raise ValueError(f"k = {k:g}% selects no entry in any tensor (the largest holds {largest} entries)")
        return {n: top_count(s, math.floor(k / 100 * s.numel())) for n, s in scores.items()}
    n_entries = sum(s.numel() for s in scores.values())
    total = math.floor(k / 100 * n_entries)
    if total == 0:
        raise ValueError(f"k = {k:g}% selects no entry: {k:g}% of {n_entries} entries rounds down to 0")
    return top_count_global(scores, total)


def top_count(t: torch.Tensor, m: int) -> torch.Tensor:
    """Mask of the m largest entries of one tensor (ties by flat index)."""
    if m <= 0:
        return torch.zeros(t.shape, dtype=torch.bool)
    key, greater = _threshold_key([t], m)
    return _mask_at_threshold(t, key, m - greater)[0]


def top_count_global(scores: dict[str, torch.Tensor], m: int) -> dict[str, torch.Tensor]:
    """Masks of the m largest entries over all tensors (ties by name, then flat index)."""
    if m <= 0:
        return {n: torch.zeros(s.shape, dtype=torch.bool) for n, s in scores.items()}
    key, greater = _threshold_key(list(scores.values()), m)
    ties_left = m - greater
    masks = {}
    for n in sorted(scores):
        masks[n], used = _mask_at_threshold(scores[n], key, ties_left)
        ties_left -= used
    return {n: masks[n] for n in scores}


def matrices_only(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The 2-D weight matrices of a score dict (norm and bias vectors left out)."""
    return {n: s for n, s in scores.items() if s.ndim >= 2}


# --- configurations: how the spot is selected (docs/METHOD.md, Configurations) -----------------------------------

@dataclass(frozen=True)
class Configuration:
    """How a configuration selects its spot: `granularity` (GRANULARITIES) over its scope, every scoped tensor or
    the 2-D weight matrices only (`matrices_only`)."""
    granularity: str
    matrices_only: bool
    description: str


CONFIGURATIONS = {
    "paper": Configuration("per_tensor", False, "per-tensor top-k over every scoped decoder tensor, norm and bias "
                           "vectors included, as the authors' code selects"),
    "global": Configuration("global", True, "global top-k over the decoder's 2-D weight matrices only"),
}


def configuration_of(name: str) -> Configuration:
    if name not in CONFIGURATIONS:
        raise ValueError(f"unknown configuration {name!r}; accepted: {tuple(CONFIGURATIONS)}")
    return CONFIGURATIONS[name]


def configuration_scope(tensors: Mapping, configuration: str) -> dict:
    """The tensors (scores, shapes, masks) a configuration selects from: all of them, or the 2-D matrices only."""
    if configuration_of(configuration).matrices_only:
        return {n: t for n, t in tensors.items() if len(tuple(t.shape if hasattr(t, "shape") else t)) >= 2}
    return dict(tensors)


def configuration_count(shapes: Mapping[str, tuple], k_percent: float, configuration: str) -> int:
    """Entries a configuration's spot holds at k: ⌊k/100 · n_t⌋ summed over the tensors (per tensor) or ⌊k/100 · N⌋
    over its scope (global). Also the size of random_uniform at a k the spot is not selected at."""
    k = check_k(k_percent)
    sizes = [math.prod(s) for s in configuration_scope(dict(shapes), configuration).values()]
    if configuration_of(configuration).granularity == "per_tensor":
        return sum(math.floor(k / 100 * n) for n in sizes)
    return math.floor(k / 100 * sum(sizes))


def configuration_spot(aggregate: dict[str, torch.Tensor], k_percent: float, configuration: str
                       ) -> dict[str, torch.Tensor] | None:
    """The spot of a configuration at k: masks over every tensor of `aggregate` (all False outside the
    configuration's scope); None when k selects no entry (per tensor: every tensor has fewer than 100/k entries)."""
    config = configuration_of(configuration)
    scope = configuration_scope(aggregate, configuration)
    if configuration_count({n: tuple(t.shape) for n, t in aggregate.items()}, k_percent, configuration) == 0:
        return None
    picked = select_top_k(scope, k_percent, config.granularity)
    return {n: picked[n] if n in picked else torch.zeros(t.shape, dtype=torch.bool) for n, t in aggregate.items()}


def configuration_top_count(aggregate: dict[str, torch.Tensor], n: int, configuration: str) -> dict[str, torch.Tensor]:
    """The top n entries of the aggregate over a configuration's scope (global order, exact ties), over every
    tensor of `aggregate`: the outlier masks of that configuration."""
    picked = top_count_global(configuration_scope(aggregate, configuration), n)
    return {name: picked[name] if name in picked else torch.zeros(t.shape, dtype=torch.bool)
            for name, t in aggregate.items()}


def code_minus_general(aggregate: dict, general: dict, k_percent: float) -> dict[str, torch.Tensor]:
    """top-k(A) minus top-k(G) over 2-D matrices, both global at the same k (docs/METHOD.md, Contrastive regions)."""
    a, g = matrices_only(aggregate), matrices_only(general)
    return mask_minus(select_top_k(a, k_percent), select_top_k(g, k_percent))


def code_over_general(aggregate: dict, general: dict, k_percent: float) -> dict[str, torch.Tensor]:
    """Global top-k over 2-D matrices of A / (G + ε), ε = 1e-3 · mean(G) (docs/METHOD.md, Contrastive regions)."""
    a, g = matrices_only(aggregate), matrices_only(general)
    n = sum(t.numel() for t in g.values())
    eps = 1e-3 * float(sum(t.double().sum() for t in g.values())) / n
    return select_top_k({name: a[name] / (g[name] + eps) for name in a}, k_percent)


def general_reference(english_score: dict, n_code_languages: int, method: str = "sum_abs") -> dict:
    """G: the general-text score on the code aggregate's scale (n_code · |S_english| for sum_abs)."""
    if method == "sum_abs":
        return {n: s.abs().float() * n_code_languages for n, s in english_score.items()}
    return aggregate({"english": english_score}, method)


# --- derived regions and mask modes (docs/METHOD.md, Regions) ---------------------------------------------------

MASK_MODES = ("region", "region_minus_magnitude", "magnitude_minus_region")


SPECIFIC = "specific:"  # label of a language-specific region: specific:<lang>


def iter_regions(masks_by_lang: Mapping[str, dict]):
    """The regions of the per-language top-k, one at a time: ('shared', entries every language selects), ('union',
    entries at least one selects), then ('specific:<lang>', entries only <lang> selects: its top-k minus the union
    of the others') per language. The one place regions are computed: from per-entry counts of how many languages
    select each entry (a uint8 per entry: no per-language unions are rebuilt).

    Each language's masks are read twice, one language at a time (once for the counts, once for its specific
    region), so masks_by_lang may read them from disk on access (runs.Lazy).
    """
    if not masks_by_lang:
        raise ValueError("regions need the masks of at least one language")
    langs = list(masks_by_lang)
    members = {}
    for lang in langs:
        for n, m in masks_by_lang[lang].items():
            members.setdefault(n, torch.zeros(m.shape, dtype=torch.uint8)).add_(m.to(torch.uint8))
    yield "shared", {n: c == len(langs) for n, c in members.items()}
    yield "union", {n: c > 0 for n, c in members.items()}
    for lang in langs:
        own = masks_by_lang[lang]
        yield SPECIFIC + lang, {n: (own[n] & (c == 1)) if n in own else torch.zeros(c.shape, dtype=torch.bool)
                                for n, c in members.items()}


def regions(masks_by_lang: dict[str, dict]) -> dict[str, dict[str, torch.Tensor]]:
    """{'shared': intersection, 'union': union, 'specific:<lang>': language-specific region of each language}."""
    return dict(iter_regions(masks_by_lang))


def stage_masks(aggregate_: dict, general: dict, weights: dict, k_percent: float):
    """The global masks stage 03 writes at k that need no single language, one at a time as (kind, masks): spot
    (the `global` configuration's: top-k over the 2-D matrices), magnitude_global (top-k |θ| over every scoped
    tensor), the spot's mask modes, general (top-k of G), code_over_general and code_minus_general. The
    per-language ones come from language_masks, their regions from iter_regions."""
    spot = configuration_spot(aggregate_, k_percent, "global")
    if spot is None:
        raise ValueError(f"k = {k_percent:g}% selects no entry: it rounds down to 0 of the 2-D matrices' entries")
    magnitude = select_top_k(weights, k_percent)
    yield "spot", spot
    yield "magnitude_global", magnitude
    for mode in MASK_MODES[1:]:
        yield f"spot_{mode}", mask_mode(spot, magnitude, mode)
    del spot, magnitude
    yield "general", select_top_k(general, k_percent)
    yield "code_over_general", code_over_general(aggregate_, general, k_percent)
    yield "code_minus_general", code_minus_general(aggregate_, general, k_percent)


def language_masks(lang_magnitudes: Mapping[str, dict], k_grid):
    """(lang, k, global top-k of |S_lang|) for every language and k, from {lang: {param: |S_lang|}}; each
    language's are read once, and only one language's are needed at a time (the mapping may read them from disk
    on access: runs.Lazy)."""
    for lang, magnitudes in lang_magnitudes.items():
        for k in k_grid:
            yield lang, k, select_top_k(magnitudes, k)


def mask_mode(region: dict, magnitude_global: dict, mode: str) -> dict[str, torch.Tensor]:
    """A region relative to `magnitude_global` (the global top-k |θ| at the same k): region, region − magnitude,
    or magnitude − region."""
    if mode == "region":
        return dict(region)
    if mode == "region_minus_magnitude":
        return mask_minus(region, magnitude_global)
    if mode == "magnitude_minus_region":
        return mask_minus(magnitude_global, region)
    raise ValueError(f"unknown mask mode {mode!r}; accepted: {MASK_MODES}")
