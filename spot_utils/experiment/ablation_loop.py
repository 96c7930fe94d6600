"""Running the ablation experiment on one item set: the baseline, then every (labels, masks) entry ablated in place
(restored on exit) and measured by the metric groups the plan gives it, as tidy rows; each entry's per-item results
written as soon as they are measured, so that a rerun measures only what is missing; the sweep of stage 04, which
chooses the headline k values and the reach of random_uniform as it goes; the cross-ablation matrix goes through the
same loop (docs/METHOD.md, Ablation; Stage 04 resume)."""
from __future__ import annotations

import hashlib
import math
import time

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..analysis import stats
from ..analysis.destroyed import point_destroyed, uniform_loss
from ..analysis.matched import damage_points, pool_seeds, random_range_covers
from ..analysis.metric_names import CHANCE, LOSS_RISE, N_SELECTED, UNIFORM_LOSS, VECTOR_SHARE
from ..analysis.rows import loss_rows, row
from ..base.io import read_json, write_json
from ..base.memory import peak_rss_mib
from ..base.run_files import ablation_entry_path
from ..measure.metric_groups import METRIC_GROUPS, Evaluators
from ..method.ablation import ablated
from ..method.mask_kinds import MASK_KINDS, OUTLIERS, REFERENCE_CONTROL
from ..method.masks import mask_count
from ..method.selection import SPECIFIC, iter_regions
from ..method.structure import summary
from .ablation_plan import (configuration_labels, control_entries, next_extension_k, outlier_masks, own_k_entries,
                            plan_metrics, run_labels, spot_masks, uniform_entry)

BASELINE = "baseline"


def vocab_size(model) -> int:
    """|V|, the rows of the model's output embedding: guessing uniformly over them costs ln |V| per token."""
    return int(model.get_output_embeddings().weight.shape[0])


def entry_id(labels: dict) -> str:
    """The name an entry's results are stored under: configuration (or 'shared' for a kind whose row has one mask
    for every configuration: the contrastive regions), mask kind, then k (or n for the outlier masks), seed and mode where set."""
    kind = labels["mask_kind"]
    if kind == BASELINE:
        return BASELINE
    shared = kind in MASK_KINDS and not MASK_KINDS[kind].per_configuration
    where = "shared" if shared else (labels.get("configuration") or "none")
    size = f"n{labels['n_entries']}" if kind == OUTLIERS else f"k{labels['k_percent']:g}"
    extra = "".join(f"_{key[0]}{labels[key]}" for key in ("seed", "mode")
                    if labels.get(key) is not None and not (key == "mode" and labels[key] == "zero"))
    return f"{where}/{kind}/{size}{extra}"


def mask_digest(masks: dict) -> str:
    """SHA-256 of a mask's names, shapes and bits: whether stored results belong to the same mask."""
    h = hashlib.sha256()
    for n in sorted(masks):
        m = masks[n].cpu().numpy()
        h.update(f"{n}:{m.shape}\0".encode() + np.packbits(m.reshape(-1), bitorder="little").tobytes())
    return h.hexdigest()


def _encode(frames: dict[str, pd.DataFrame]) -> dict:
    """Frames as JSON-ready columns (floats written with repr: read back bit-exactly)."""
    return {g: {c: f[c].tolist() for c in f.columns} for g, f in frames.items()}


def _decode(data: dict) -> dict[str, pd.DataFrame]:
    return {g: pd.DataFrame(cols) for g, cols in data.items()}


class FrameStore:
    """Per-item results of stage 04 on disk, one JSON file per entry (runs.ablation_entry_path), each written
    atomically as soon as it is measured. `open` checks a freshly measured baseline against the stored one bit for
    bit: results measured against another baseline (other items, model or threads) are never mixed in."""

    def __init__(self, run: dict | str):
        self.run = run
        self.reused, self.written = [], []  # entries read from an earlier sitting, entries measured in this one
        self.copied = []  # entries stored from another entry's frames (the same mask measured under other labels)
        self.costs = {}  # entry -> seconds and the process's peak RSS after it was ablated and measured

    def path(self, entry: str):
        return ablation_entry_path(self.run, entry)

    def open(self, baseline: dict[str, pd.DataFrame]) -> None:
        """Check the baseline against the stored one (every metric group both hold), then store it (with any metric
        group the stored one lacks)."""
        encoded, path = _encode(baseline), self.path(BASELINE)
        stored = read_json(path)["frames"] if path.is_file() else {}
        if any(stored[g] != encoded[g] for g in set(stored) & set(encoded)):
            raise ValueError(f"the baseline measured now differs from the one stored in {path}: the stored "
                             "results belong to other items, another model, dtype or number of threads; delete "
                             f"{path.parent} to measure everything again")
        if set(encoded) - set(stored):
            write_json(path, dict(entry=BASELINE, frames={**stored, **encoded}))

    def get(self, entry: str, digest: str, groups) -> dict[str, pd.DataFrame] | None:
        """Stored frames of an entry measured on the same mask with the same metric groups, else None."""
        path = self.path(entry)
        if not path.is_file():
            return None
        data = read_json(path)
        if data.get("mask_digest") != digest or sorted(data["frames"]) != sorted(groups):
            return None
        self.reused.append(entry)
        return _decode(data["frames"])

    def put(self, entry: str, digest: str, labels: dict, frames: dict[str, pd.DataFrame], measured: bool = True) -> None:
        write_json(self.path(entry), dict(entry=entry, labels=labels, mask_digest=digest, frames=_encode(frames)))
        (self.written if measured else self.copied).append(entry)

    def holds(self, entry: str) -> bool:
        """Whether this sitting has read or written the entry."""
        return entry in self.written or entry in self.reused or entry in self.copied


def ablate_and_evaluate(model, entries, evaluators: Evaluators, params: dict, baseline: dict | None = None,
                        store: FrameStore | None = None, vocab: int | None = None, cache: dict | None = None):
    """Evaluate (labels, masks) entries, each ablated in its mode (a baseline entry first if `baseline` is None).

    store: per-item results are read from it where an entry was measured before on the same mask, and written to
    it as soon as measured; cache: frames by mask (its digest, mode and metric groups) shared between calls, so that
    a mask met twice (a contrastive region in both configurations, an outlier mask equal to a spot) is measured
    once. vocab (|V|): subsets at or above ln |V| are marked destroyed in the rows, and the baseline
    gets a uniform_loss row (ln |V|); the baseline also gets a chance row per subset where a group defines it.
    Returns (rows, results, baseline): results is a list of (labels, {group: per-item frame}) for the paired
    tests; baseline is the unablated {group: frame}.
    """
    results, rows = [], []
    cache = {} if cache is None else cache
    if baseline is None:
        base_labels = run_labels(params, mask_kind=BASELINE)
        baseline = evaluators(plan_metrics(base_labels, params))
        if store is not None:
            store.open(baseline)
        results.append((base_labels, baseline))
        rows += frame_rows(baseline, None, base_labels, params["bootstrap_samples"], vocab)
        if vocab is not None:
            rows.append(row(metric=UNIFORM_LOSS, subset="vocabulary", value=uniform_loss(vocab), n=vocab,
                            **base_labels))
        rows += [row(metric=CHANCE, subset=subset, value=float(c), **base_labels)
                 for evaluation in evaluators.groups.values() for subset, c in evaluation.chance.items()]
    for labels, masks in tqdm(entries, desc="masks", leave=False):
        labels = dict(labels, mode=labels.get("mode") or "zero")
        labels.setdefault("n_entries", mask_count(masks))
        groups = [g for g in plan_metrics(labels, params) if g in evaluators.groups]
        key, digest = entry_id(labels), mask_digest(masks)
        same = (digest, labels["mode"], labels.get("seed") if labels["mode"] == "noise" else None, tuple(groups))
        frames, stored = cache.get(same), False
        if frames is None and store is not None:
            frames = store.get(key, digest, groups)
            stored = frames is not None
        measured = frames is None
        if measured:
            start = time.perf_counter()
            with ablated(model, masks, mode=labels["mode"], seed=labels.get("seed") or 0):
                frames = evaluators(groups)
            if store is not None:
                store.costs[key] = dict(seconds=round(time.perf_counter() - start, 3),
                                        peak_rss_mib=peak_rss_mib())
        if store is not None and not stored and not store.holds(key):
            store.put(key, digest, labels, frames, measured)
        cache[same] = frames
        results.append((labels, frames))
        rows += frame_rows(frames, baseline, labels, params["bootstrap_samples"], vocab) + mask_rows(labels, masks)
    return rows, results, baseline


def frame_rows(frames: dict[str, pd.DataFrame], baseline: dict | None, labels: dict, n_boot: int = 1000,
               vocab: int | None = None) -> list[dict]:
    """Tidy rows of every metric group: loss-like groups through loss_rows (with loss_rise against the
    baseline and `destroyed` for a vocabulary of `vocab` tokens), the others as means of each item metric with
    bootstrap intervals."""
    rows = []
    for group, frame in frames.items():
        if METRIC_GROUPS.pick(group).loss_like:
            rows += loss_rows(frame, None if baseline is None else baseline.get(group), vocab_size=vocab, **labels)
            continue
        for subset, g in frame.groupby("subset", sort=False):
            for metric in METRIC_GROUPS[group].item_metrics:
                v = g.sort_values("item")[metric].to_numpy(dtype=float)
                if np.isnan(v).all() and "status" in g:  # not measured (e.g. not generated: destroyed)
                    rows.append(row(metric=metric, subset=subset, value=None, n=len(v), status=g["status"].iloc[0],
                                    **labels))
                    continue
                lo, hi = stats.mean_ci(v, n_boot=n_boot)
                rows.append(row(metric=metric, subset=subset, value=float(v.mean()), n=len(v), ci_low=lo, ci_high=hi,
                                **labels))
    return rows


def mask_rows(labels: dict, masks: dict) -> list[dict]:
    """Size of a mask and the share of it in norm vectors and biases (subset 'parameters')."""
    s = summary(masks)
    return [row(metric=N_SELECTED, subset="parameters", value=s["total"], **labels),
            row(metric=VECTOR_SHARE, subset="parameters", value=s["vector_share"], n=s["total"], **labels)]


def item_losses(frames: dict[str, pd.DataFrame]) -> dict[str, np.ndarray]:
    """{subset: item losses in item order} of an entry's loss group."""
    return {s: g.sort_values("item")["loss"].to_numpy(dtype=float) for s, g in frames["loss"].groupby("subset", sort=False)}


def is_destroyed(losses: dict[str, np.ndarray], code_subsets, references, vocab: int) -> bool:
    """Whether a point is not kept under the median rule (destroyed.point_destroyed): the median code loss or any
    reference it was measured on at or above ln |V|."""
    return point_destroyed(losses, [s for s in code_subsets if s in losses], [r for r in references if r in losses],
                           vocab)


def _zero_losses(results, configuration: str) -> list[tuple[dict, dict]]:
    """(labels, per-item losses) of a configuration's zero-ablation results that measured the loss."""
    return [(lab, item_losses(f)) for lab, f in results
            if lab.get("configuration") == configuration and lab["mode"] == "zero" and "loss" in f]


def uniform_ks(results, configuration: str, code_subsets, references, vocab: int) -> tuple[set, set]:
    """The k values at which a configuration's random_uniform was measured: (intact, destroyed), a k destroyed where
    any seed is not kept under the median rule (is_destroyed)."""
    status = {}
    for lab, losses in _zero_losses(results, configuration):
        if lab["mask_kind"] == REFERENCE_CONTROL:
            k = lab["k_percent"]
            status[k] = status.get(k, False) or is_destroyed(losses, code_subsets, references, vocab)
    return {k for k, d in status.items() if not d}, {k for k, d in status.items() if d}


def _uniform_curve(results, configuration: str) -> tuple[dict, dict]:
    """(the baseline's per-item losses, {k: random_uniform's per-item losses pooled over its seeds}) of a
    configuration: what random_covers and uniform_bracket_ks read its curve from."""
    base = item_losses(next(f for lab, f in results if lab["mask_kind"] == BASELINE))
    per_k = {}
    for lab, losses in _zero_losses(results, configuration):
        if lab["mask_kind"] == REFERENCE_CONTROL:
            per_k.setdefault(lab["k_percent"], []).append(losses)
    return base, {k: pool_seeds(v) for k, v in per_k.items()}


def random_covers(results, configuration: str, code_subsets, references, vocab: int) -> bool:
    """Whether random_uniform's curve of a configuration (seeds pooled per k) reaches the general rise of every
    kept point (median rule) of the masks compared with it, for every reference (matched.random_range_covers)."""
    base, random = _uniform_curve(results, configuration)
    mine = _zero_losses(results, configuration)
    masks = {i: losses for i, (lab, losses) in enumerate(mine) if lab["mask_kind"] != REFERENCE_CONTROL}
    for ref in references:
        points = damage_points(masks, base, code_subsets, ref, vocab)
        curve = damage_points(random, base, code_subsets, ref, vocab)
        if not random_range_covers(points, curve):
            return False
    return True


def bracketing_ks(points: list[dict], curve: list[dict]) -> set:
    """The keys (k values) of random_uniform's curve points that bracket each mask point's general damage: for a
    point at x = ln(1 + g), the curve point with the largest x at or below it and the one with the smallest x at or
    above it (one only where the origin or the curve's end is the other side). Points and curve are damage_points
    dicts; points that are not kept (destroyed, or code collapsed) are left out."""
    def kept(p):
        return p.get("status") is None and not p["destroyed"]
    curve = sorted(filter(kept, curve), key=lambda p: p["x"])
    out = set()
    for p in filter(kept, points):
        below = [c["key"] for c in curve if c["x"] <= p["x"]]
        above = [c["key"] for c in curve if c["x"] >= p["x"]]
        out.update(below[-1:] + above[:1])
    return out


def compared_points(results, configuration: str) -> list[tuple[dict, dict]]:
    """(labels, per-item losses) of a configuration's points whose matched excess the headline reads: the zero-mode
    points of the headline kinds that are not controls (the spot, authors_spot, code_over_general) and the outlier
    masks (the spot's curve below its grid)."""
    kinds = {k for k, row in MASK_KINDS.items() if row.headline and row.ablation != "control"} | {OUTLIERS}
    return [(lab, losses) for lab, losses in _zero_losses(results, configuration) if lab["mask_kind"] in kinds]


def uniform_bracket_ks(results, configuration: str, code_subsets, references, vocab: int) -> set:
    """The k values of random_uniform's curve (seeds pooled) that bracket a compared point (compared_points) under
    any reference: where its seed variance matters most, so they get n_uniform_seeds seeds."""
    base, random = _uniform_curve(results, configuration)
    points = {i: losses for i, (lab, losses) in enumerate(compared_points(results, configuration))}
    out = set()
    for ref in references:
        out |= bracketing_ks(damage_points(points, base, code_subsets, ref, vocab),
                             damage_points(random, base, code_subsets, ref, vocab))
    return out


def sweep(model, params: dict, evaluators: Evaluators, aggregate: dict, code_subsets, store: FrameStore | None = None):
    """Stage 04's measurements: the baseline, then per configuration the spot at every k, the smallest k at which it
    is not destroyed (with k_detail the headline k values), the kinds ablated at their own k (authors_spot), every
    mask compared with it (control_entries) and the outlier masks; then random_uniform at k values of
    random_extension_k (next_extension_k), one at a time, until its curve reaches the general rise of every
    non-destroyed point (for every reference) or no k can extend it; then random_uniform's n_uniform_seeds seeds at
    every k of its curve that brackets a compared point (uniform_bracket_ks).

    Returns (rows, results, baseline, info): info per configuration holds headline_ks, smallest_intact_k, the k
    values random_uniform was extended to, whether its range covers the points and the bracketing k values.
    """
    vocab = vocab_size(model)
    refs = params["general_references"]
    rows, results, baseline = ablate_and_evaluate(model, [], evaluators, params, store=store, vocab=vocab)
    cache, info = {}, {}

    def measure(entries):
        r, res, _ = ablate_and_evaluate(model, entries, evaluators, params, baseline, store, vocab, cache)
        rows.extend(r)
        results.extend(res)
        return res

    for configuration in params["configurations"]:
        spots = spot_masks(params, model, configuration)
        measured = measure((configuration_labels(params, configuration, k_percent=k, mask_kind="spot"), spot)
                           for k, spot in spots.items())
        intact = [lab["k_percent"] for lab, f in measured
                  if not is_destroyed(item_losses(f), code_subsets, refs, vocab)]
        smallest = min(intact) if intact else None
        headline = sorted({params["k_detail"]} | ({smallest} if smallest is not None else set()))
        measure(own_k_entries(params, model, configuration))
        measure(control_entries(params, model, configuration, spots, headline))
        measure((run_labels(params, k_percent=None, **lab), m)
                for lab, m in outlier_masks(aggregate, params["outlier_counts"], configuration))
        extended, brackets = [], set()
        while True:  # extend, then seed the bracketing k values; again if the seeds moved the curve
            covered = random_covers(results, configuration, code_subsets, refs, vocab)
            while not covered:
                k = next_extension_k(params, *uniform_ks(results, configuration, code_subsets, refs, vocab))
                if k is None:
                    break
                measure([uniform_entry(params, model, configuration, k, params["random_seeds"][0])])
                extended.append(k)
                covered = random_covers(results, configuration, code_subsets, refs, vocab)
            new = uniform_bracket_ks(results, configuration, code_subsets, refs, vocab)
            brackets |= new
            have = {(lab["k_percent"], lab.get("seed")) for lab, _ in _zero_losses(results, configuration)
                    if lab["mask_kind"] == REFERENCE_CONTROL}
            missing = [(k, seed) for k in sorted(new) for seed in params["random_seeds"][: params["n_uniform_seeds"]]
                       if (k, seed) not in have]
            if not missing:
                break
            measure([uniform_entry(params, model, configuration, k, seed) for k, seed in missing])
        info[configuration] = dict(headline_ks=headline, smallest_intact_k=smallest, random_extended_to=extended,
                                   random_covers=covered, random_bracket_ks=sorted(brackets))
    return rows, results, baseline, info


def cross_ablation(model, lang_masks: dict[str, dict], evaluators: Evaluators, params: dict, labels: dict) -> list[dict]:
    """Ablate each language's specific region (selection.iter_regions) and measure the evaluators' subsets
    through ablate_and_evaluate with its own baseline: rows mask_kind 'specific:<lang>' with loss_rise against
    the unablated model on the same items, and the region's size."""
    entries = [(dict(labels, mask_kind=kind), masks) for kind, masks in iter_regions(lang_masks)
               if kind.startswith(SPECIFIC)]
    rows, _, _ = ablate_and_evaluate(model, entries, evaluators, params)
    return [r for r in rows if r["mask_kind"] != "baseline" and r["metric"] in (LOSS_RISE, N_SELECTED,
                                                                                  VECTOR_SHARE)]
