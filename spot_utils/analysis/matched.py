"""Damage-matched comparison of an ablation with random damage (docs/METHOD.md, Damage-matched comparison).

Each (mask, k) gives a point (g, c): r = ablated loss / baseline loss − 1 per subset, c = the unweighted mean of r
over the code subsets, g = r on one general-text reference. random_uniform's points (item losses averaged over its
seeds first) in log coordinates (ln(1 + g), ln(1 + c)), plus the origin, sorted by ln(1 + g) and linearly
interpolated, form the random curve: how much code loss random damage costs for a given general-text loss. The
matched excess of a mask is ln(1 + c) − curve(ln(1 + g)): positive when it hurts code more than random damage
that hurts the general text equally. A point is never extrapolated past the random curve's range. Which points are
read is the destroyed rule's (analysis.destroyed, `rule`: the median over code subsets by default, "any" for the
sensitivity rows): a mask point whose reference reaches ln |V| (the loss of a uniform guess) is `destroyed`, one
whose code is destroyed while the reference is not is `code_collapse` (code collapses, general text intact: no
excess, but its code and general rise are reported); a kept point's subsets enter the rises capped at ln |V|
(destroyed.capped), random points' too, and random points that are not kept stay out of the curve.

The items part of the uncertainty is a paired two-stage bootstrap: resample the code languages, then the items
within each drawn language, and the reference's items; the same draw serves the baseline, every mask and every
random point, and the random curve is refitted in every replicate. The masks' part comes from random_uniform's
seeds: where a k holds several seeds, each seed's point scatters around the curve (its residual in ln(1 + c) at its
own ln(1 + g)); their pooled variance s² (Σ_k (n_k − 1) degrees of freedom) says how far one random mask lies from
the curve. A mask point is one mask (or the mean of m seeds), compared with the curve of the seeds' means, so its
excess carries s² · (1/m + w), w = (1 − t)²/n_lo + t²/n_hi the curve's own share at its position (t between the
bracketing points of n_lo and n_hi seeds). The interval is excess ± t_ν · √(se_items² + se_seed²), ν from
Welch–Satterthwaite, and the p-value is the t test's; with no k of several seeds, the items-only percentile
interval and bootstrap p remain (and say so). Inputs are per-item losses, `{subset: array}`, with the same items in
the same order in every frame. Pure numpy: no model.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import beta, norm, t as student_t

from .destroyed import DEFAULT_RULE, DESTROYED, capped, point_status
from .metric_names import MATCHED_EXCESS
from .stats import _interval, bootstrap_p, holm

OUTSIDE = "outside_random_range"
NO_CURVE = "no_random_curve"


# ----------------------------------------------------------------------------------------- points

def pool_seeds(per_seed: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each item's loss averaged over seeds (every seed must hold the same subsets and item counts)."""
    if isinstance(per_seed, Mapping):
        per_seed = [per_seed]
    if not per_seed:
        raise ValueError("pool_seeds needs at least one seed's item losses")
    subsets = list(per_seed[0])
    for i, frame in enumerate(per_seed[1:], 1):
        if list(frame) != subsets or any(len(frame[s]) != len(per_seed[0][s]) for s in subsets):
            raise ValueError(f"seed {i} holds other subsets or item counts than seed 0")
    return {s: np.mean([np.asarray(f[s], dtype=float) for f in per_seed], axis=0) for s in subsets}


# ----------------------------------------------------------------------------------------- resampling

class Draw:
    """Which items every replicate takes: per replicate b and language slot j a code language `lang[b, j]` and
    its items (`flat` indexes the padded (languages, n_max) array, `valid` masks the padding); `general[b]` the
    reference's items. `Draw.identity` is the data itself (one replicate)."""

    def __init__(self, lang, flat, valid, general):
        self.lang, self.flat, self.valid, self.general = lang, flat, valid, general

    @classmethod
    def identity(cls, n_items: Sequence[int], n_general: int) -> "Draw":
        n_items = np.asarray(n_items)
        n_max = int(n_items.max())
        lang = np.arange(len(n_items))[None]
        idx = np.broadcast_to(np.arange(n_max), (1, len(n_items), n_max))
        return cls(lang, lang[..., None] * n_max + idx, idx < n_items[lang][..., None],
                   np.arange(n_general)[None])

    @classmethod
    def two_stage(cls, n_items: Sequence[int], n_general: int, n_boot: int, rng: np.random.Generator) -> "Draw":
        """Languages with replacement, then, for every drawn language, its items with replacement."""
        n_items = np.asarray(n_items)
        n_lang, n_max = len(n_items), int(n_items.max())
        lang = rng.integers(0, n_lang, size=(n_boot, n_lang))
        n_sel = n_items[lang][..., None]
        idx = np.minimum((rng.random((n_boot, n_lang, n_max)) * n_sel).astype(np.int64), n_sel - 1)
        general = rng.integers(0, n_general, size=(n_boot, n_general)) if n_general else np.zeros((n_boot, 0), int)
        return cls(lang, lang[..., None] * n_max + idx, np.arange(n_max) < n_sel, general)


def _padded(frame: Mapping[str, np.ndarray], code_subsets, n_max: int) -> np.ndarray:
    out = np.zeros((len(code_subsets), n_max))
    for i, s in enumerate(code_subsets):
        v = np.asarray(frame[s], dtype=float)
        out[i, :len(v)] = v
    return out


def _sums(padded: np.ndarray, draw: Draw) -> np.ndarray:
    """Per replicate and language slot, the sum of the drawn items' losses (b, slots)."""
    return np.where(draw.valid, padded.ravel()[draw.flat], 0.0).sum(-1)


class _Frames:
    """Item losses of the baseline and of every ablation, padded once for fast resampling."""

    def __init__(self, baseline: Mapping[str, np.ndarray], code_subsets, general: str):
        self.code, self.general = list(code_subsets), general
        if not self.code:
            raise ValueError("need at least one code subset")
        missing = [s for s in [*self.code, general] if s not in baseline]
        if missing:
            raise ValueError(f"baseline has no items for subsets {missing}")
        self.n_items = [len(baseline[s]) for s in self.code]
        self.n_general = len(baseline[general])
        self.n_max = max(self.n_items)
        self.baseline = baseline

    def check(self, frame: Mapping[str, np.ndarray], name: str) -> None:
        for s, n in zip([*self.code, self.general], [*self.n_items, self.n_general]):
            if s not in frame or len(frame[s]) != n:
                raise ValueError(f"{name}: subset {s!r} must hold the baseline's {n} items "
                                 f"(has {len(frame[s]) if s in frame else 'none'})")

    def rises(self, frame: Mapping[str, np.ndarray], draw: Draw, base_sums=None) -> tuple[np.ndarray, np.ndarray]:
        """(g, c) per replicate: general rise and unweighted mean code rise over the drawn language slots."""
        if base_sums is None:
            base_sums = self.base_sums(draw)
        code = (_sums(_padded(frame, self.code, self.n_max), draw) / base_sums[0] - 1).mean(1)
        gen = np.asarray(frame[self.general], dtype=float)[draw.general].sum(1) / base_sums[1] - 1
        return gen, code

    def base_sums(self, draw: Draw):
        base_gen = np.asarray(self.baseline[self.general], dtype=float)[draw.general].sum(1)
        return _sums(_padded(self.baseline, self.code, self.n_max), draw), base_gen


# ----------------------------------------------------------------------------------------- the curve

def interp_rows(xs: np.ndarray, ys: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Row-wise linear interpolation of sorted curves (b, K ≥ 2) at xq (b,); NaN outside [xs[:, 0], xs[:, -1]]."""
    rows = np.arange(len(xq))
    i = np.clip((xs <= xq[:, None]).sum(1) - 1, 0, xs.shape[1] - 2)
    x0, x1, y0, y1 = xs[rows, i], xs[rows, i + 1], ys[rows, i], ys[rows, i + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x1 > x0, (xq - x0) / (x1 - x0), 0.0)
    out = y0 + t * (y1 - y0)
    out[(xq < xs[:, 0]) | (xq > xs[:, -1]) | np.isnan(xq)] = np.nan
    return out


def curve(g: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Random curve per replicate from rises (b, K): log coordinates with the origin added, sorted by x."""
    x = np.concatenate([np.zeros((len(g), 1)), np.log1p(g)], 1)
    y = np.concatenate([np.zeros((len(c), 1)), np.log1p(c)], 1)
    order = np.argsort(x, axis=1, kind="stable")
    return np.take_along_axis(x, order, 1), np.take_along_axis(y, order, 1)


def excess(g_mask, c_mask, g_random, c_random) -> np.ndarray:
    """ln(1 + c) − curve(ln(1 + g)) per replicate (NaN outside the curve's range)."""
    xs, ys = curve(np.atleast_2d(g_random), np.atleast_2d(c_random))
    return np.log1p(np.atleast_1d(c_mask)) - interp_rows(xs, ys, np.log1p(np.atleast_1d(g_mask)))


def seed_scatter(random: Mapping, fr: "_Frames", curve_ks: Sequence, curve_g: np.ndarray,
                 curve_c: np.ndarray) -> tuple[float | None, int]:
    """(s², degrees of freedom): the pooled variance of random_uniform's seed points (random: k → one seed's item
    losses or a list per seed, as they enter the curve: capped) around the curve of the seed means (its points'
    rises curve_g, curve_c at curve_ks), in ln(1 + c) at each point's own ln(1 + g), over the curve's ks with
    several seeds; (None, 0) when none has several."""
    if not len(curve_ks):
        return None, 0
    draw = Draw.identity(fr.n_items, fr.n_general)
    base = fr.base_sums(draw)
    xs, ys = curve(np.atleast_2d(curve_g), np.atleast_2d(curve_c))
    xs, ys = xs[0], ys[0]
    squares, df = 0.0, 0
    for k in curve_ks:
        seeds = random[k] if isinstance(random[k], Sequence) else [random[k]]
        if len(seeds) < 2:
            continue
        for frame in seeds:
            g, c = fr.rises(frame, draw, base)
            x = math.log1p(float(g[0]))  # the segment it falls on, extended past the ends (seeds straddle them)
            i = int(np.clip(np.searchsorted(xs, x, side="right") - 1, 0, len(xs) - 2))
            slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) if xs[i + 1] > xs[i] else 0.0
            squares += (math.log1p(float(c[0])) - (ys[i] + slope * (x - xs[i]))) ** 2
        df += len(seeds) - 1
    return (squares / df, df) if df else (None, 0)


def curve_share(g: float, curve_g: Sequence[float], n_seeds: Sequence[int]) -> float:
    """w: the share of one mask's seed variance that the curve of seed means contributes at general rise g, from
    the interpolation weights of its bracketing points ((1 − t)²/n_lo + t²/n_hi; the origin is exact)."""
    x = np.concatenate([[0.0], np.log1p(np.asarray(curve_g, dtype=float))])
    n = np.concatenate([[np.inf], np.asarray(n_seeds, dtype=float)])
    order = np.argsort(x, kind="stable")
    x, n = x[order], n[order]
    xq = math.log1p(g)
    i = int(np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2))
    t = 0.0 if x[i + 1] == x[i] else (xq - x[i]) / (x[i + 1] - x[i])
    return float((1 - t) ** 2 / n[i] + t ** 2 / n[i + 1])


def binomial_interval(successes: int, n: int, level: float = 0.95) -> tuple[float | None, float | None]:
    """Clopper–Pearson interval of a proportion (None, None) for n = 0."""
    if n == 0:
        return None, None
    a = (1 - level) / 2
    lo = 0.0 if successes == 0 else float(beta.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta.ppf(1 - a, successes + 1, n - successes))
    return lo, hi


# ----------------------------------------------------------------------------------------- the comparison

def minimal_detectable_effect(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true difference a two-sided test at `alpha` detects with probability `power`, given the
    statistic's standard error: (z_{1−α/2} + z_{power}) · se, 2.80 · se at the defaults."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def damage_points(frames: Mapping, baseline: Mapping[str, np.ndarray], code_subsets, general: str,
                  vocab_size: int, rule: str = DEFAULT_RULE) -> list[dict]:
    """One dict per ablation (key → item losses): code and general rise (a kept point's from its capped losses),
    their log coordinates, `status` (destroyed.point_status under `rule`: None, `destroyed` or `code_collapse`) and
    `destroyed` (status `destroyed`)."""
    fr = _Frames(baseline, code_subsets, general)
    draw = Draw.identity(fr.n_items, fr.n_general)
    out = []
    for key, frame in frames.items():
        fr.check(frame, f"ablation {key!r}")
        status = point_status(frame, fr.code, general, vocab_size, rule)
        g, c = fr.rises(capped(frame, [*fr.code, general], vocab_size) if status is None else frame, draw)
        out.append(dict(key=key, code_rise=float(c[0]), general_rise=float(g[0]), x=float(np.log1p(g[0])),
                        y=float(np.log1p(c[0])), status=status, destroyed=status == DESTROYED))
    return out


def matched_excess(baseline: Mapping[str, np.ndarray], masks: Mapping, random: Mapping, code_subsets,
                   general: str, vocab_size: int, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                   alpha: float = 0.05, power: float = 0.8, seed_variance: bool = True,
                   rule: str = DEFAULT_RULE) -> list[dict]:
    """Matched excess of every mask point against random damage, one tidy dict per mask point.

    Args:
        baseline: subset → item losses.
        masks: key (e.g. (mask_kind, k)) → subset → item losses, or a list of such per seed (one point, the seeds'
            mean, whose own seed variance is s²/m for m seeds).
        random: k → subset → item losses, or a list of such per seed (pooled with `pool_seeds`; the seeds' scatter
            gives s², see the module docstring). Random points that are not kept (destroyed or code_collapse under
            `rule`) are left out of the curve; kept ones enter capped (destroyed.capped), each seed too.
        seed_variance: False gives the items-only interval (the two-stage bootstrap alone), for comparison.
        rule: the destroyed rule for the code subsets (destroyed.RULES; "median" by default).

    Returns:
        One dict per mask: key, metric, reference (= general), value, ci_low, ci_high, se (items and seeds), se_items,
        se_seed (None without seeds to estimate it), df (of the t interval; None for the items-only one), mde
        (minimal_detectable_effect of se), p, p_holm (Holm over the defined p-values of this call: one family),
        status (None, `destroyed`, `code_collapse`, `outside_random_range` or `no_random_curve`; value None unless
        None), destroyed (status `destroyed`), code_rise, general_rise (a kept point's capped, a destroyed or
        collapsed point's as measured), n (items: code subsets and reference), n_languages and defined (share of
        replicates whose point lies inside that replicate's random curve).
    """
    fr = _Frames(baseline, code_subsets, general)
    pooled = {k: pool_seeds(v) for k, v in random.items()}
    for k, frame in pooled.items():
        fr.check(frame, f"random k={k}")
    mask_seeds = {key: len(v) if isinstance(v, Sequence) else 1 for key, v in masks.items()}
    masks = {key: pool_seeds(v) for key, v in masks.items()}
    for key, frame in masks.items():
        fr.check(frame, f"mask {key!r}")
    read = [*fr.code, general]
    curve_ks = [k for k in sorted(pooled) if point_status(pooled[k], fr.code, general, vocab_size, rule) is None]
    curve_seeds = [len(random[k]) if isinstance(random[k], Sequence) else 1 for k in curve_ks]
    pooled = {k: capped(pooled[k], read, vocab_size) for k in curve_ks}  # kept points enter capped
    seeds = {k: [capped(f, read, vocab_size) for f in (random[k] if isinstance(random[k], Sequence) else [random[k]])]
             for k in curve_ks}
    status = {key: point_status(frame, fr.code, general, vocab_size, rule) for key, frame in masks.items()}
    masks = {key: capped(frame, read, vocab_size) if status[key] is None else frame for key, frame in masks.items()}

    def all_rises(draw):
        base = fr.base_sums(draw)
        r = [fr.rises(pooled[k], draw, base) for k in curve_ks]
        rg = np.stack([x[0] for x in r], 1) if r else None
        rc = np.stack([x[1] for x in r], 1) if r else None
        return rg, rc, {key: fr.rises(frame, draw, base) for key, frame in masks.items()}

    point_g, point_c, point_m = all_rises(Draw.identity(fr.n_items, fr.n_general))
    s2, df_seed = seed_scatter(seeds, fr, curve_ks, point_g, point_c) if seed_variance else (None, 0)
    boot_g, boot_c, boot_m = all_rises(Draw.two_stage(fr.n_items, fr.n_general, n_boot, np.random.default_rng(seed)))
    n = sum(fr.n_items) + fr.n_general
    rows = []
    for key, frame in masks.items():
        g, c = point_m[key]
        out = dict(key=key, metric=MATCHED_EXCESS, reference=general, value=None, ci_low=None, ci_high=None, se=None,
                   se_items=None, se_seed=None, df=None, mde=None, p=None, p_holm=None, status=status[key],
                   destroyed=status[key] == DESTROYED, code_rise=float(c[0]), general_rise=float(g[0]), n=n,
                   n_languages=len(fr.code), defined=None)
        if status[key] is None and not curve_ks:  # destroyed or code_collapse keep their status (and their rises)
            out["status"] = NO_CURVE
        elif status[key] is None:
            value = float(excess(g, c, point_g, point_c)[0])
            if math.isnan(value):
                out["status"] = OUTSIDE
            else:
                reps = excess(*boot_m[key], boot_g, boot_c)
                kept = reps[~np.isnan(reps)]
                out.update(value=value, defined=len(kept) / n_boot)
                if len(kept) >= 2:
                    se_items = float(kept.std(ddof=1))
                    if s2 is None:  # no k with several seeds: the items-only interval
                        se, (lo, hi), p = se_items, _interval(kept, level), bootstrap_p(kept)
                    else:
                        se_seed = math.sqrt(s2 * (1 / mask_seeds[key] + curve_share(float(g[0]), point_g[0],
                                                                                       curve_seeds)))
                        se = math.sqrt(se_items ** 2 + se_seed ** 2)
                        df = df_seed * (se / se_seed) ** 4 if se_seed > 0 else math.inf  # Welch–Satterthwaite
                        half = float(student_t.ppf(1 - (1 - level) / 2, df)) * se
                        lo, hi = value - half, value + half
                        p = float(2 * student_t.sf(abs(value) / se, df)) if se > 0 else float(value == 0)
                        out.update(se_seed=se_seed, df=df)
                    out.update(ci_low=lo, ci_high=hi, se=se, se_items=se_items, p=p,
                               mde=minimal_detectable_effect(se, alpha, power))
        rows.append(out)
    adjusted = holm([np.nan if r["p"] is None else r["p"] for r in rows])
    for r, p in zip(rows, adjusted):
        r["p_holm"] = None if np.isnan(p) else float(p)
    return rows


def placebo(baseline: Mapping[str, np.ndarray], random: Mapping, code_subsets, general: str, vocab_size: int,
            alpha: float = 0.05, level: float = 0.95, rule: str = DEFAULT_RULE, **kwargs) -> dict:
    """The placebo check: every random_uniform seed at a k of several seeds, compared through `matched_excess`
    (the headline's procedure) with the curve of the *other* seeds. A random mask hurts code exactly as much as
    random damage does, so how often one is called significant is the procedure's false-positive rate. rule: the
    destroyed rule (destroyed.RULES), as in matched_excess.

    Returns:
        {'rows': one matched_excess dict per seed, with `k` and `seed_index`; 'called': seeds with p < alpha; 'n':
        seeds with a p-value; 'rate': called / n (None for n = 0); 'ci_low', 'ci_high': its Clopper–Pearson
        interval at `level`}.
    """
    rows = []
    for k, seeds in random.items():
        seeds = list(seeds) if isinstance(seeds, Sequence) else [seeds]
        if len(seeds) < 2:
            continue
        for j, frame in enumerate(seeds):
            others = dict(random)
            others[k] = seeds[:j] + seeds[j + 1:]
            [r] = matched_excess(baseline, {("placebo", k, j): frame}, others, code_subsets, general, vocab_size,
                                 alpha=alpha, level=level, rule=rule, **kwargs)
            rows.append(dict(r, k=k, seed_index=j))
    defined = [r for r in rows if r["p"] is not None]
    called = sum(r["p"] < alpha for r in defined)
    lo, hi = binomial_interval(called, len(defined), level)
    return dict(rows=rows, called=called, n=len(defined), rate=called / len(defined) if defined else None,
                ci_low=lo, ci_high=hi)


def random_range_covers(mask_points: Sequence[dict], random_points: Sequence[dict]) -> bool:
    """True when the random curve (its kept points, status None, from `damage_points`) reaches the general rise of
    every kept mask point: otherwise random_uniform's k grid needs a larger k."""
    reach = max([0.0] + [p["x"] for p in random_points if p["status"] is None])
    return all(p["x"] <= reach for p in mask_points if p["status"] is None)


def two_stage_mean(values: Sequence[np.ndarray], n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Replicates of the unweighted mean over languages of each language's item mean, under the two-stage
    bootstrap `matched_excess` uses (languages, then items within each drawn language)."""
    n_items = [len(v) for v in values]
    draw = Draw.two_stage(n_items, 0, n_boot, np.random.default_rng(seed))
    padded = _padded(dict(enumerate(values)), range(len(values)), max(n_items))
    return (_sums(padded, draw) / np.asarray(n_items)[draw.lang]).mean(1)
