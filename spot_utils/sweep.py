"""The ablation experiment: evaluate masks against the baseline on the same held-out items (docs/METHOD.md, Ablation).

A plan is a list of (labels, masks, metric groups). Each entry is ablated once (in place, restored on
exit) and every metric group it asks for is evaluated on the same items as the baseline: `loss`
(per-language code and general-text loss), `likelihood` (reference solutions given their prompts),
`mc` (lm-eval multiple choice) and `generation` (pass@1). Per-item values are kept, so that every
metric gets a bootstrap interval and every mask a paired test against random_uniform.
"""
from __future__ import annotations

import time
from collections import defaultdict

import numpy as np
import pandas as pd

from . import stats
from .ablation import ablated
from .evaluation import item_losses
from .masks import mask_count, mask_minus, mask_or
from .metrics import loss_rows, row
from .structure import summary

ITEM_METRICS = {"loss": ("loss", "accuracy"), "likelihood": ("loss", "accuracy"), "mc": ("acc", "acc_norm"),
                "generation": ("pass@1",), "math": ("exact_match",)}


def selectivity_rows(items: pd.DataFrame, baseline: pd.DataFrame, code_subsets, general_subset: str,
                     labels: dict, threshold: float = 0.01, n_boot: int = 1000, parts: dict | None = None) -> list[dict]:
    """code_rise (mean r over code subsets, subset 'code'), general_rise (r on the general subset), with
    bootstrap intervals, and their ratio (selectivity), reported only when both rises exceed `threshold`
    (docs/METHOD.md, Selectivity). parts (e.g. {"scored": [...], "unseen": [...]}): code_rise of each part too (subset 'code:<part>')."""
    abl, base = _by_subset(items, "loss"), _by_subset(baseline, "loss")
    code = [s for s in code_subsets if s in abl]
    ci = stats.rises_ci(abl, base, code, general_subset, n_boot=n_boot)
    (code_rise, c_lo, c_hi), (general_rise, g_lo, g_hi) = ci["code"], ci["general"]
    rows = [row(metric="code_rise", subset="code", value=code_rise, n=len(code), ci_low=c_lo, ci_high=c_hi, **labels),
            row(metric="general_rise", subset=general_subset, value=general_rise, n=len(abl[general_subset]),
                ci_low=g_lo, ci_high=g_hi, **labels)]
    sel = stats.selectivity(code_rise, general_rise, threshold)
    if not np.isnan(sel):
        rows.append(row(metric="selectivity", subset=f"code/{general_subset}", value=sel, n=len(code), **labels))
    for part, members in (parts or {}).items():
        members = [s for s in members if s in abl]
        if members:
            value, lo, hi = stats.rises_ci(abl, base, members, general_subset, n_boot=n_boot)["code"]
            rows.append(row(metric="code_rise", subset=f"code:{part}", value=value, n=len(members), ci_low=lo,
                            ci_high=hi, **labels))
    return rows


def _by_subset(frame: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    return {s: g.sort_values("item")[column].to_numpy() for s, g in frame.groupby("subset", sort=False)}


# ---------------------------------------------------------------- the plan

def mask_plan(params: dict, model):
    """(labels, masks) for every ablation of the run (docs/METHOD.md, Controls).

    At each k and granularity: the spot and random_uniform (n_uniform_seeds seeds); at k_detail (every k
    with `every_k`): random per tensor (every seed) and magnitude, and the spot under each extra ablation
    mode. At each k (global): code_over_general; code_minus_general at k_detail (or every k).
    """
    from .ablation import magnitude_per_tensor, random_per_tensor, random_uniform
    from .masks import load_masks
    from .runs import mask_path
    from .scoring import scoped_parameters

    shapes = {n: tuple(p.shape) for n, p in scoped_parameters(model).items()}
    base = dict(model=params["model"], criterion=params["criterion"], aggregation=params["aggregation"])
    seeds = params["random_seeds"]
    uniform_seeds = seeds[: params.get("n_uniform_seeds", 1)]
    for k in params["k_grid"]:
        detail = k == params["k_detail"] or params.get("every_k", False)
        for gran in params["granularities"]:
            spot, _ = load_masks(mask_path(params, "spot", k, gran))
            label = dict(base, k_percent=k, granularity=gran)
            yield dict(label, mask_kind="spot"), spot
            for seed in uniform_seeds:
                yield dict(label, mask_kind="random_uniform", seed=seed, control_of="spot"), \
                    random_uniform(spot, seed, shapes)
            if detail:
                for seed in seeds:
                    yield dict(label, mask_kind="random", seed=seed, control_of="spot"), random_per_tensor(spot, seed)
                yield dict(label, mask_kind="magnitude", control_of="spot"), magnitude_per_tensor(model, spot)
                for mode in params.get("ablation_modes", ["zero"])[1:]:
                    yield dict(label, mask_kind="spot", mode=mode, seed=params["seed"]), spot
        label = dict(base, k_percent=k, granularity="global")
        yield dict(label, mask_kind="code_over_general"), load_masks(mask_path(params, "code_over_general", k))[0]
        if detail:
            yield dict(label, mask_kind="code_minus_general"), load_masks(mask_path(params, "code_minus_general", k))[0]


def outlier_masks(aggregate: dict, counts) -> list[tuple[dict, dict]]:
    """(labels, masks) of the top n entries of the aggregate for each n in counts (global, exact ties)."""
    from .selection import top_count_global
    return [(dict(mask_kind="top_entries", n_entries=int(n)), top_count_global(aggregate, int(n))) for n in counts]


def outlier_table(outliers: list[tuple[dict, dict]]) -> pd.DataFrame:
    """Where the top entries sit: one row per (n, tensor holding any of them) with layer, module, count."""
    from .structure import distribution
    frames = []
    for labels, masks in outliers:
        d = distribution(masks)
        frames.append(d[d.selected > 0].assign(top_n=labels["n_entries"]))
    cols = ["top_n", "param", "layer", "module", "vector", "selected"]
    return pd.concat(frames)[cols].sort_values(["top_n", "selected"], ascending=[True, False]).reset_index(drop=True)


def specific_regions(lang_masks: dict[str, dict]) -> dict[str, dict]:
    """Language-specific region of each language: its top-k minus the union of the others' (docs/METHOD.md, Regions)."""
    out = {}
    for lang, m in lang_masks.items():
        others = {}
        for other, om in lang_masks.items():
            if other != lang:
                others = mask_or(others, om)
        out[lang] = mask_minus(m, others)
    return out


def mask_rows(labels: dict, masks: dict) -> list[dict]:
    """Size of a mask and the share of it in norm vectors and biases (subset 'parameters')."""
    s = summary(masks)
    return [row(metric="n_selected", subset="parameters", value=s["total"], **labels),
            row(metric="vector_share", subset="parameters", value=s["vector_share"], n=s["total"], **labels)]


def plan_metrics(labels: dict, params: dict) -> tuple[str, ...]:
    """Metric groups an entry gets: loss always; likelihood, mc and generation for baseline, spot,
    code_over_general and random_uniform at k_detail (every k with `every_k`), zero mode only."""
    groups = ["loss"]
    heavy = labels["mask_kind"] in ("baseline", "spot", "code_over_general", "random_uniform") \
        and labels.get("mode", "zero") in (None, "zero") \
        and (labels["mask_kind"] == "baseline" or labels["k_percent"] == params["k_detail"] or params["every_k"])
    if heavy:
        groups += ["likelihood", "mc", "generation", "math"]
    return tuple(groups)


# ---------------------------------------------------------------- running it

def build_evaluators(params: dict, model, tokenizer, loss_subsets, work_dir) -> "Evaluators":
    """The run's metric groups from its params: reference-solution likelihood (likelihood_items > 0),
    lm-eval multiple choice (mc_benchmarks), pass@1 (generation) and GSM8K exact match (gsm8k_items > 0),
    each on its seeded subsample."""
    from . import evalsets
    from .evaluation import encode_pairs, gsm8k_accuracy, pass_at_1
    likelihood = mc = generation = math = None
    if params["likelihood_items"] > 0:
        langs = params["likelihood_languages"]
        langs = params["languages"] + params["unseen_languages"] if langs is None else langs
        pairs = evalsets.reference_pairs(languages=langs, n=params["likelihood_items"], seed=params["seed"])
        likelihood = encode_pairs(tokenizer, pairs, params["likelihood_max_len"])
    if params["mc_benchmarks"]:
        from .lmeval import MultipleChoice
        bench = {b: evalsets.subsample(evalsets.multiple_choice(b), params["mc_items"], params["seed"])
                 for b in params["mc_benchmarks"]}
        mc = MultipleChoice(model, tokenizer, bench, work_dir, batch_size=params["mc_batch_size"])
    if params["generation"]:
        n = params["generation_items"]
        he = evalsets.subsample(evalsets.humaneval(), n, params["seed"])
        mb = evalsets.subsample(evalsets.mbpp(), n, params["seed"])

        def generation(m):
            return pass_at_1(m, tokenizer, he, mb, params["generation_max_new_tokens"],
                             params["generation_batch_size"], params["exec_timeout"])
    if params["gsm8k_items"] > 0:
        problems = evalsets.subsample(evalsets.gsm8k(), params["gsm8k_items"], params["seed"])

        def math(m):
            return gsm8k_accuracy(m, tokenizer, problems, params["generation_max_new_tokens"],
                                  params["generation_batch_size"])
    return Evaluators(model, loss_subsets, params["batch_size"], likelihood, mc, generation, math)


class Evaluators:
    """The metric groups of a run as callables of the (possibly ablated) model, each timed.

    loss: dict subset -> token tensors; likelihood: (sequences, context lengths) from encode_pairs;
    mc: a spot_utils.lmeval.MultipleChoice; generation / math: callables model -> pass@1 / exact-match frame.
    Missing ones are skipped.
    """

    def __init__(self, model, loss_subsets, batch_size: int, likelihood=None, mc=None, generation=None, math=None):
        self.likelihood, self.mc = likelihood, mc
        self.groups = {"loss": lambda: item_losses(model, loss_subsets, batch_size, desc="loss")}
        if likelihood is not None:
            seqs, ctx = likelihood
            self.groups["likelihood"] = lambda: item_losses(model, seqs, batch_size, desc="likelihood",
                                                            context_lengths=ctx)
        if mc is not None:
            self.groups["mc"] = mc.item_scores
        if generation is not None:
            self.groups["generation"] = lambda: generation(model)
        if math is not None:
            self.groups["math"] = lambda: math(model)
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)

    def __call__(self, groups) -> dict[str, pd.DataFrame]:
        out = {}
        for g in groups:
            if g in self.groups:
                start = time.perf_counter()
                out[g] = self.groups[g]()
                self.seconds[g] += time.perf_counter() - start
                self.calls[g] += 1
        return out

    def timings(self) -> dict:
        """Seconds in total and per call of each metric group (for the manifest)."""
        return {g: dict(seconds=round(s, 1), calls=self.calls[g], per_call=round(s / self.calls[g], 2))
                for g, s in self.seconds.items()}


def run_entries(model, entries, evaluators: Evaluators, params: dict, baseline: dict | None = None):
    """Evaluate (labels, masks) entries, each ablated in its mode (a baseline entry first if `baseline` is None).

    Returns (rows, results, baseline): results is a list of (labels, {group: per-item frame}) for the paired
    tests; baseline is the unablated {group: frame}.
    """
    from tqdm.auto import tqdm
    results, rows = [], []
    if baseline is None:
        base_labels = dict(model=params["model"], criterion=params["criterion"], aggregation=params["aggregation"],
                           mask_kind="baseline")
        baseline = evaluators(plan_metrics(base_labels, params))
        results.append((base_labels, baseline))
        rows += frame_rows(baseline, None, base_labels, params["bootstrap_samples"])
    for labels, masks in tqdm(list(entries), desc="masks", leave=False):
        labels = dict(labels, mode=labels.get("mode") or "zero")
        labels.setdefault("n_entries", mask_count(masks))
        with ablated(model, masks, mode=labels["mode"], seed=labels.get("seed") or 0):
            frames = evaluators(plan_metrics(labels, params))
        results.append((labels, frames))
        rows += frame_rows(frames, baseline, labels, params["bootstrap_samples"]) + mask_rows(labels, masks)
    return rows, results, baseline


def frame_rows(frames: dict[str, pd.DataFrame], baseline: dict | None, labels: dict, n_boot: int = 1000) -> list[dict]:
    """Tidy rows of every metric group: loss-like groups through loss_rows (with loss_rise against the
    baseline), the others as means with bootstrap intervals."""
    rows = []
    for group, frame in frames.items():
        if group in ("loss", "likelihood"):
            rows += loss_rows(frame, None if baseline is None else baseline.get(group), **labels)
            continue
        for subset, g in frame.groupby("subset", sort=False):
            for metric in ITEM_METRICS[group]:
                v = g.sort_values("item")[metric].to_numpy(dtype=float)
                lo, hi = stats.mean_ci(v, n_boot=n_boot)
                rows.append(row(metric=metric, subset=subset, value=float(v.mean()), n=len(v), ci_low=lo, ci_high=hi,
                                **labels))
    return rows


def _key(labels: dict) -> tuple:
    return labels.get("k_percent"), labels.get("granularity")


def reference_frames(results) -> dict[tuple, dict[str, pd.DataFrame]]:
    """random_uniform's per-item frames at each (k, granularity), averaged over its seeds item by item."""
    acc = defaultdict(lambda: defaultdict(list))
    for labels, frames in results:
        if labels["mask_kind"] == "random_uniform" and labels.get("mode", "zero") == "zero":
            for g, f in frames.items():
                acc[_key(labels)][g].append(f)
    out = {}
    for key, groups in acc.items():
        out[key] = {g: pd.concat(fs).groupby(["subset", "item"], sort=False).mean(numeric_only=True).reset_index()
                    for g, fs in groups.items()}
    return out


def paired_rows(results, baseline: dict, code_subsets, general_subset: str, n_boot: int = 1000,
                parts: dict | None = None) -> list[dict]:
    """Against random_uniform of the same k and granularity (mean over its seeds), for every other mask:
    selectivity rows (code/general rises with intervals, selectivity), the selectivity difference with a
    paired bootstrap interval and p-value, and a Wilcoxon signed-rank p-value per subset and item metric.
    The p-values are Holm-corrected within each family, i.e. each p-value metric over all masks (and
    subsets) of the run: the selectivity tests together, each Wilcoxon metric together (metric p_holm_*)."""
    refs = reference_frames(results)
    rows = []
    for labels, frames in results:
        if labels["mask_kind"] == "baseline":
            continue
        if "loss" in frames:
            rows += selectivity_rows(frames["loss"], baseline["loss"], code_subsets, general_subset, labels,
                                     n_boot=n_boot, parts=parts)
        ref = refs.get(_key(labels))
        if ref is None or labels["mask_kind"] == "random_uniform":
            continue
        ref_labels = dict(labels, control_of="random_uniform")
        if "loss" in frames and "loss" in ref:
            abl, r, b = (_by_subset(f, "loss") for f in (frames["loss"], ref["loss"], baseline["loss"]))
            code = [s for s in code_subsets if s in abl]
            res = stats.selectivity_vs_reference(abl, r, b, code, general_subset, n_boot=n_boot)
            if not np.isnan(res["diff"]):
                rows.append(row(metric="selectivity_minus_reference", subset=f"code/{general_subset}",
                                value=res["diff"], ci_low=res["ci_low"], ci_high=res["ci_high"], n=len(code),
                                **ref_labels))
                rows.append(row(metric="p_selectivity_vs_reference", subset=f"code/{general_subset}", value=res["p"],
                                **ref_labels))
        for group, frame in frames.items():
            if group not in ref:
                continue
            for metric in ITEM_METRICS[group][:1] if group in ("loss", "likelihood") else ITEM_METRICS[group]:
                a, r = _by_subset(frame, metric), _by_subset(ref[group], metric)
                for subset in a:
                    rows.append(row(metric=f"p_wilcoxon_{metric}", subset=subset, value=stats.wilcoxon_p(a[subset], r[subset]),
                                    n=len(a[subset]), **ref_labels))
    for metric in dict.fromkeys(r["metric"] for r in rows if r["metric"].startswith("p_")):
        family = [r for r in rows if r["metric"] == metric]
        for r, adj in zip(family, stats.holm([r["value"] for r in family])):
            rows.append(dict(r, metric=metric.replace("p_", "p_holm_", 1), value=float(adj)))
    return rows


def cross_ablation(model, lang_masks: dict[str, dict], subsets, batch_size: int, labels: dict) -> list[dict]:
    """Ablate each language's specific region and measure every subset: rows mask_kind 'specific:<lang>'
    with loss_rise against the unablated model on the same items."""
    base = item_losses(model, subsets, batch_size, desc="cross baseline")
    rows = []
    for lang, masks in specific_regions(lang_masks).items():
        lab = dict(labels, mask_kind=f"specific:{lang}", mode="zero", n_entries=mask_count(masks))
        with ablated(model, masks):
            items = item_losses(model, subsets, batch_size, desc=f"specific:{lang}")
        rows += [r for r in loss_rows(items, base, **lab) if r["metric"] == "loss_rise"] + mask_rows(lab, masks)
    return rows


def rise_frame(rows: list[dict]) -> pd.DataFrame:
    """code_rise / general_rise rows (zero mode) per mask kind and k: mean over seeds, and an error bar
    from the lowest interval bound to the highest over seeds (interval and seed spread together)."""
    df = pd.DataFrame(rows)
    df = df[df.metric.isin(["code_rise", "general_rise"]) & (df["mode"].fillna("zero") == "zero")
            & df.k_percent.notna() & ~df.subset.str.startswith("code:")]
    return (df.groupby(["granularity", "mask_kind", "k_percent", "metric"], sort=False)
            .agg(value=("value", "mean"), ci_low=("ci_low", "min"), ci_high=("ci_high", "max"), seeds=("value", "size"))
            .reset_index())


def controls_match(plan) -> bool:
    """True when every control has its spot's count: per tensor (random, magnitude) or in total (random_uniform)."""
    from .masks import counts_per_tensor
    spots = {(lab["k_percent"], lab["granularity"]): m for lab, m in plan if lab["mask_kind"] == "spot"}
    for lab, m in plan:
        spot = spots.get((lab["k_percent"], lab["granularity"])) if lab.get("control_of") == "spot" else None
        if spot is None:
            continue
        if lab["mask_kind"] == "random_uniform":
            if mask_count(m) != mask_count(spot):
                return False
        elif counts_per_tensor(m) != counts_per_tensor(spot):
            return False
    return True


# ---------------------------------------------------------------- reading the results

def _zero(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["mode"].fillna("zero") == "zero"]


def headline(rows: list[dict], k: float, granularity: str) -> pd.DataFrame:
    """At one k and granularity, per mask kind: code and general rise with 95% intervals, selectivity, and its
    difference from random_uniform's with a paired-bootstrap interval and Holm-corrected p (seeds averaged)."""
    from .metrics import ci_pivot, to_frame
    df = _zero(to_frame(rows))
    at = df[(df.k_percent == k) & (df.granularity == granularity)].copy()  # contrastive regions are global
    part = at.subset.fillna("").str.startswith("code:")
    at.loc[part, "metric"] = "code_rise " + at.loc[part, "subset"].str.removeprefix("code:")
    cols = ["code_rise"] + sorted(set(at.loc[part, "metric"])) + ["general_rise", "selectivity",
                                                                  "selectivity_minus_reference"]
    table = ci_pivot(at[at.metric.isin(cols)], "mask_kind", "metric")
    table = table[[c for c in cols if c in table.columns]]
    p = at[at.metric == "p_holm_selectivity_vs_reference"].groupby("mask_kind").value.mean()
    table["p_holm vs random_uniform"] = p.reindex(table.index).map(lambda v: "—" if pd.isna(v) else f"{v:.3g}")
    return table


def finding(rows: list[dict], k: float, granularity: str) -> str:
    """One sentence on the spot against random_uniform at k, computed from the rows."""
    from .metrics import to_frame
    df = _zero(to_frame(rows))
    df = df[(df.k_percent == k) & (df.granularity == granularity) & ~df.subset.fillna("").str.startswith("code:")]

    def val(kind, metric):
        v = df[(df.mask_kind == kind) & (df.metric == metric)].value
        return float(v.mean()) if len(v) else float("nan")
    sc, sg = val("spot", "code_rise"), val("spot", "general_rise")
    uc, ug = val("random_uniform", "code_rise"), val("random_uniform", "general_rise")
    text = (f"At k = {k:g}% ({granularity}) the spot raises code loss by {sc:+.1%} and English loss by {sg:+.1%}; "
            f"random_uniform of the same size: code {uc:+.1%}, English {ug:+.1%}. ")
    d = df[(df.mask_kind == "spot") & (df.metric == "selectivity_minus_reference")]
    p = df[(df.mask_kind == "spot") & (df.metric == "p_holm_selectivity_vs_reference")].value
    if len(d):
        r = d.iloc[0]
        verdict = ("more coding-specific than random damage" if r.ci_low > 0 else
                   "less coding-specific than random damage" if r.ci_high < 0 else
                   "not distinguishable from random damage in selectivity")
        text += (f"Spot selectivity minus random_uniform's: {r.value:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}] "
                 f"(Holm p = {float(p.iloc[0]):.3g}): {verdict}.")
    else:
        text += "Selectivity is undefined for the spot or random_uniform here (a rise ≤ 1%): read the two rises."
    return text


def code_only_collapses(rows: list[dict], code_min: float = 0.5, general_max: float = 0.1) -> pd.DataFrame:
    """(mask kind, k, granularity) where code loss rises by more than code_min while English rises by less
    than general_max (seeds averaged): where, if anywhere, code collapses while English holds."""
    rf = rise_frame(rows)
    wide = rf.pivot_table(index=["granularity", "mask_kind", "k_percent"], columns="metric", values="value")
    if not {"code_rise", "general_rise"} <= set(wide.columns):
        return wide.iloc[0:0]
    return wide[(wide.code_rise > code_min) & (wide.general_rise < general_max)].reset_index()
