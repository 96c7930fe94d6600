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
from .masks import PackedMasks, mask_minus, pack

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


def _threshold_key(tensors: Mapping[str, torch.Tensor], m: int) -> tuple[int, int]:
    """(key of the m-th largest entry, number of entries with a larger key); m ≥ 1. `tensors` is read one tensor
    at a time, in passes (it may read them from files on access: run_files.TensorFile)."""
    total = sum(_numel(tensors, n) for n in tensors)
    if total <= _SMALL:  # small inputs: a copy of their keys is cheap
        keys = torch.cat([_order_keys(tensors[n].reshape(-1)) for n in tensors])
        key = int(torch.topk(keys, m, sorted=False).values.min() if 2 * m <= total
                  else torch.kthvalue(keys, total - m + 1).values)
        return key, int((keys > key).sum())
    return _bracketed_threshold(tensors, m, total) or _radix_threshold(tensors, m)


def _bracketed_threshold(tensors: Mapping[str, torch.Tensor], m: int, total: int) -> tuple[int, int] | None:
    """One pass: bracket the m-th largest key between two quantiles of a random sample, count the keys above the
    bracket and keep only those inside it (a small buffer). None if the bracket misses or holds too many keys."""
    gen = torch.Generator().manual_seed(0)
    n_sample = max(1 << 16, min(1 << 23, total >> 8))
    sample = torch.cat([_sample_keys(tensors[n], n_sample, total, gen) for n in tensors if _numel(tensors, n)])
    sample = sample.sort(descending=True).values
    q = m / total
    spread = 6 * math.sqrt(len(sample) * q * (1 - q)) + 4
    top, bottom = math.floor(q * len(sample) - spread), math.ceil(q * len(sample) + spread)
    hi = _key_value(int(sample[top])) if top >= 0 else math.inf  # values > hi are counted, in [lo, hi] kept
    lo = _key_value(int(sample[bottom])) if bottom < len(sample) else -math.inf
    cap = max(_SMALL, total >> 6)
    above, inside, kept = 0, [], 0
    for n in tensors:
        flat = tensors[n].reshape(-1)
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


def _radix_threshold(tensors: Mapping[str, torch.Tensor], m: int) -> tuple[int, int]:
    """Two-pass radix select over the key bits (16 high, then 16 low): exact whatever the distribution."""
    hist = torch.zeros(1 << 16, dtype=torch.int64)
    for n in tensors:
        for keys in _chunks(tensors[n]):
            hist += torch.bincount(((keys >> 16) + 32768).long(), minlength=1 << 16).cpu()  # scores may be on a GPU
    above_hi = torch.flip(hist, [0]).cumsum(0)  # count of entries with high bits ≥ bin (from the top)
    pos = int(torch.searchsorted(above_hi, torch.tensor(m)))
    hi = (1 << 16) - 1 - pos
    greater = int(above_hi[pos - 1]) if pos > 0 else 0
    hist_lo = torch.zeros(1 << 16, dtype=torch.int64)
    for n in tensors:
        for keys in _chunks(tensors[n]):
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


def _numel(tensors: Mapping, name: str) -> int:
    """Entries of one tensor, from the mapping's `shapes` when it has them (no read), else from the tensor."""
    shapes = getattr(tensors, "shapes", None)
    return math.prod(shapes[name]) if shapes is not None else tensors[name].numel()


def _shape(tensors: Mapping, name: str) -> tuple:
    """Shape of one tensor, from the mapping's `shapes` when it has them, else from the value (a tensor or a shape)."""
    shapes = getattr(tensors, "shapes", None)
    if shapes is not None:
        return tuple(shapes[name])
    value = tensors[name]
    return tuple(value.shape) if hasattr(value, "shape") else tuple(value)


def _sample_keys(t: torch.Tensor, n_sample: int, total: int, gen: torch.Generator) -> torch.Tensor:
    """Keys of a random sample of one tensor, its share of n_sample draws over `total` entries."""
    draws = torch.randint(0, t.numel(), (max(1, round(n_sample * t.numel() / total)),), generator=gen)
    return _order_keys(t.reshape(-1)[draws])


class View(Mapping):
    """A read-only mapping over some names of another (`names`; default all), whose values are fn(tensor) of that
    mapping's, made on access and kept nowhere: e.g. the 2-D matrices of a score file, or A / (G + ε) tensor by
    tensor. `shapes` passes through, so sizes are known without reading."""

    def __init__(self, source: Mapping, names=None, fn=None):
        self._source, self._fn = source, fn
        self._names = list(source) if names is None else list(names)
        self.shapes = {n: _shape(source, n) for n in self._names}

    def __getitem__(self, name):
        if name not in self.shapes:
            raise KeyError(name)
        t = self._source[name]
        return t if self._fn is None else self._fn(name, t)

    def __contains__(self, name) -> bool:  # no read (Mapping's default would make the value)
        return name in self.shapes

    def __iter__(self):
        return iter(self._names)

    def __len__(self):
        return len(self._names)


def on_device(tensors: Mapping[str, torch.Tensor], device: str | torch.device) -> Mapping[str, torch.Tensor]:
    """`tensors` read onto `device` one tensor at a time (View), so selection's passes (keys, sample, bracket,
    radix histograms, masks) run there; the CPU mapping itself for a CPU device. Masks are packed on the host.
    Thresholds and ties are exact, so the masks equal the CPU's."""
    if torch.device(device).type == "cpu":
        return tensors
    return View(tensors, fn=lambda name, t: t.to(device))


def _check_finite(scores: Mapping[str, torch.Tensor]) -> None:
    for n in scores:  # min and max propagate NaN: one pass, no full-size temporary
        s = scores[n]
        if s.numel() and not all(math.isfinite(float(v)) for v in torch.aminmax(s.reshape(-1))):
            raise ValueError(f"score of {n!r} contains NaN or inf")


def select_top_k(scores: Mapping[str, torch.Tensor], k_percent: float, granularity: str = "global") -> PackedMasks:
    """Boolean masks of the top k% entries: ⌊k/100·N⌋ over all entries (global) or ⌊k/100·n_t⌋ per tensor.

    Args:
        scores: {parameter name: values}; larger is selected first, ties broken by (name, flat index). Read one
            tensor at a time (a mapping that reads from files on access, run_files.TensorFile, keeps memory at a
            few tensors).
        k_percent: in (0, 100).
        granularity: 'global' or 'per_tensor'.

    Returns:
        PackedMasks: {parameter name: bool mask of the tensor's shape}, held bit-packed.
    """
    k = check_k(k_percent)
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; accepted: {GRANULARITIES}")
    if not scores:
        raise ValueError("select_top_k got no scores to select from")
    _check_finite(scores)
    if granularity == "per_tensor":
        largest = max(_numel(scores, n) for n in scores)
        if math.floor(k / 100 * largest) == 0:
            raise ValueError(f"k = {k:g}% selects no entry in any tensor (the largest holds {largest} entries)")
        out = PackedMasks()
        for n in scores:
            s = scores[n]
            out.add(n, top_count(s, math.floor(k / 100 * s.numel())))
        return out
    n_entries = sum(_numel(scores, n) for n in scores)
    total = math.floor(k / 100 * n_entries)
    if total == 0:
        raise ValueError(f"k = {k:g}% selects no entry: {k:g}% of {n_entries} entries rounds down to 0")
    return top_count_global(scores, total)


def top_count(t: torch.Tensor, m: int) -> torch.Tensor:
    """Mask of the m largest entries of one tensor (ties by flat index)."""
    if m <= 0:
        return torch.zeros(t.shape, dtype=torch.bool)
    key, greater = _threshold_key({"": t}, m)
    return _mask_at_threshold(t, key, m - greater)[0]


def top_count_global(scores: Mapping[str, torch.Tensor], m: int) -> PackedMasks:
    """Masks (bit-packed) of the m largest entries over all tensors (ties by name, then flat index): the threshold
    in passes over `scores`, then each tensor's mask made and packed in one more."""
    if m <= 0:
        return _empty(scores, scores)
    key, greater = _threshold_key(scores, m)
    ties_left = m - greater
    masks = {}
    for n in sorted(scores):
        mask, used = _mask_at_threshold(scores[n], key, ties_left)
        masks[n] = (pack(mask), tuple(mask.shape), int(mask.sum()))
        ties_left -= used
    out = PackedMasks()
    for n in scores:
        out.add_packed(n, *masks[n])
    return out


def _empty(names, shapes_of: Mapping) -> PackedMasks:
    """All-False masks of the given tensors (their shapes from `shapes_of`)."""
    out = PackedMasks()
    for n in names:
        out.add(n, torch.zeros(_shape(shapes_of, n), dtype=torch.bool))
    return out


def _over(picked: PackedMasks, tensors: Mapping) -> PackedMasks:
    """`picked` extended to every tensor of `tensors` (all False where it has none), in the order of `tensors`."""
    out = PackedMasks()
    for n in tensors:
        if n in picked:
            out.add_packed(n, picked.packed[n], picked.shapes[n], picked.counts[n])
        else:
            out.add(n, torch.zeros(_shape(tensors, n), dtype=torch.bool))
    return out


def matrices_only(scores: Mapping[str, torch.Tensor]) -> View:
    """The 2-D weight matrices of a score mapping (norm and bias vectors left out), read on access."""
    return View(scores, [n for n in scores if len(_shape(scores, n)) >= 2])


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


def configuration_scope(tensors: Mapping, configuration: str) -> Mapping:
    """The tensors (scores, shapes, masks) a configuration selects from: all of them, or the 2-D matrices only."""
    return matrices_only(tensors) if configuration_of(configuration).matrices_only else tensors


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
    if configuration_count({n: _shape(aggregate, n) for n in aggregate}, k_percent, configuration) == 0:
        return None
    return _over(select_top_k(scope, k_percent, config.granularity), aggregate)


def configuration_top_count(aggregate: dict[str, torch.Tensor], n: int, configuration: str) -> dict[str, torch.Tensor]:
    """The top n entries of the aggregate over a configuration's scope (global order, exact ties), over every
    tensor of `aggregate`: the outlier masks of that configuration."""
    return _over(top_count_global(configuration_scope(aggregate, configuration), n), aggregate)


def code_minus_general(aggregate: dict, general: dict, k_percent: float) -> dict[str, torch.Tensor]:
    """top-k(A) minus top-k(G) over 2-D matrices, both global at the same k (docs/METHOD.md, Contrastive regions)."""
    a, g = matrices_only(aggregate), matrices_only(general)
    return mask_minus(select_top_k(a, k_percent), select_top_k(g, k_percent))


def code_over_general(aggregate: dict, general: dict, k_percent: float) -> dict[str, torch.Tensor]:
    """Global top-k over 2-D matrices of A / (G + ε), ε = 1e-3 · mean(G) (docs/METHOD.md, Contrastive regions)."""
    a, g = matrices_only(aggregate), matrices_only(general)
    n = sum(_numel(g, name) for name in g)
    eps = 1e-3 * float(sum(g[name].cpu().double().sum() for name in g)) / n  # CPU sums: the same ε on any device
    return select_top_k(View(a, fn=lambda name, t: t / (g[name] + eps)), k_percent)  # the ratio one tensor at a time


def general_reference(english_score: dict, n_code_languages: int, method: str = "sum_abs") -> dict:
    """G: the general-text score on the code aggregate's scale (n_code · |S_english| for sum_abs)."""
    if method == "sum_abs":
        return {n: s.abs().float() * n_code_languages for n, s in english_score.items()}
    return aggregate({"english": english_score}, method)


# --- derived regions and mask modes (docs/METHOD.md, Regions) ---------------------------------------------------

MASK_MODES = ("region", "region_minus_magnitude", "magnitude_minus_region")


SPECIFIC = "specific:"  # label of a language-specific region: specific:<lang>


def iter_regions(masks_by_lang: Mapping[str, Mapping]):
    """The regions of the per-language top-k, one at a time: ('shared', entries every language selects), ('union',
    entries at least one selects), then ('specific:<lang>', entries only <lang> selects: its top-k minus the union
    of the others') per language. The one place regions are computed: tensor by tensor, from per-entry counts of
    how many languages select each entry (one tensor's uint8 counts at a time), every region kept bit-packed.

    Each language's masks are read twice per tensor (masks_by_lang may read them from disk on access, e.g.
    {lang: masks.MaskFile(path)}: memory then holds the regions' bits and one tensor of a language's mask).
    """
    if not masks_by_lang:
        raise ValueError("regions need the masks of at least one language")
    langs = list(masks_by_lang)
    names = []
    for lang in langs:
        names += [n for n in masks_by_lang[lang] if n not in names]
    shared, union = PackedMasks(), PackedMasks()
    specific = {lang: PackedMasks() for lang in langs}
    for n in names:
        holders = [lang for lang in langs if n in masks_by_lang[lang]]
        count = masks_by_lang[holders[0]][n].to(torch.uint8)
        for lang in holders[1:]:
            count.add_(masks_by_lang[lang][n].to(torch.uint8))
        shared.add(n, count == len(langs))
        union.add(n, count > 0)
        alone = count == 1
        for lang in langs:  # each language's mask of this tensor read a second time: memory flat in the languages
            specific[lang].add(n, masks_by_lang[lang][n] & alone if lang in holders
                               else torch.zeros(count.shape, dtype=torch.bool))
    yield "shared", shared
    yield "union", union
    for lang in langs:
        yield SPECIFIC + lang, specific[lang]


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
        return region
    if mode == "region_minus_magnitude":
        return mask_minus(region, magnitude_global)
    if mode == "magnitude_minus_region":
        return mask_minus(magnitude_global, region)
    raise ValueError(f"unknown mask mode {mode!r}; accepted: {MASK_MODES}")
