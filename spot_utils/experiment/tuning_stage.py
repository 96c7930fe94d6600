"""Stage 07: does the spot train coding best? Every arm (a sparse arm per mask kind, configuration and k; LoRA of a
matched size; every parameter) trains with the same steps, batches, learning-rate schedule and seeds on code windows of
the score split that stage 01 did not score, one language held out; each is evaluated on the eval split against the
untrained model. Each arm and seed's per-item results are written as soon as they are measured and reused by a rerun
whose inputs match (docs/METHOD.md, Tuning)."""
from __future__ import annotations

import copy
import hashlib
import json
import math

import numpy as np
import pandas as pd
import torch

from ..analysis.rows import loss_rows
from ..analysis.tuning_rows import gain_rows
from ..base.run_files import mask_path, tuning_entry_path
from ..data import corpus
from ..measure.metric_groups import build_evaluators
from ..method.mask_kinds import MASK_KINDS
from ..method.masks import MaskFile, mask_count
from ..method.tuning import (FULL, LORA, SPARSE_ARMS, UNTRAINED, SparseAdamW, lora_model, matched_lora_rank,
                             sparse_parameters, train, trainable_count)
from .ablation_loop import FrameStore, mask_digest
from .ablation_plan import run_labels, scope_shapes

GROUPS = ("loss", "training")  # the frames stored per entry: item losses, and the training curve with its count


class TuningStore(FrameStore):
    """Stage 07's per-entry results under runs/<run>/tuning/ (FrameStore's checks: the untrained model's frames bit
    for bit, an entry reused only when its digest of inputs matches)."""

    def path(self, entry: str):
        return tuning_entry_path(self.run, entry)


def held_out_language(params: dict) -> str:
    """The code language left out of the training data (tuning_held_out; null: the last of languages)."""
    return params["tuning_held_out"] or params["languages"][-1]


def training_sequences(params: dict, tokenizer) -> dict[str, corpus.Sequences]:
    """Per trained language, the windows of the score split that follow stage 01's: stage 01 scores the first
    n_score_sequences windows at max_len with the run's seed, and windows tile their files without overlap, so the
    next ones share no token with them. Each is cut to tuning_max_len; enough of them for tuning_steps ×
    tuning_batch_size sequences round-robin over the languages.

    Returns:
        {language: the sequences, with `windows` (file, start) of each}.
    """
    languages = [lang for lang in params["languages"] if lang != held_out_language(params)]
    needed = math.ceil(params["tuning_steps"] * params["tuning_batch_size"] / len(languages))
    max_len, skip = params["tuning_max_len"] or params["max_len"], params["n_score_sequences"]
    out = {}
    for lang in languages:
        drawn = corpus.load_sequences(lang, "score", tokenizer, n=skip + needed, max_len=params["max_len"],
                                      seed=params["seed"], source=corpus.language_source(params["corpus_source"], lang),
                                      eval_fraction=params["eval_fraction"])
        seqs = corpus.Sequences(s[:max_len] for s in drawn[skip:])
        seqs.windows, seqs.info = drawn.windows[skip:], dict(drawn.info, skipped=skip, max_len=max_len)
        seqs.scored = drawn.windows[:skip]
        out[lang] = seqs
    return out


def batches_for(training: dict[str, list[torch.Tensor]], params: dict, seed: int) -> list[list[torch.Tensor]]:
    """tuning_steps batches of tuning_batch_size sequences: the languages' sequences round-robin, in an order seeded
    by `seed`; every arm of that seed trains on these."""
    pool = [seqs[i] for i in range(max(map(len, training.values()))) for seqs in training.values() if i < len(seqs)]
    order = np.random.default_rng(seed).permutation(len(pool))
    size, steps = params["tuning_batch_size"], params["tuning_steps"]
    picked = [pool[i] for i in order[: size * steps]]
    return [picked[i * size:(i + 1) * size] for i in range(steps)]


def entry_id(labels: dict) -> str:
    """Where an entry's results are stored: 'untrained', '<configuration|shared>/<mask kind>/k<k>_s<seed>',
    'lora/r<rank>_s<seed>' or 'full/s<seed>'."""
    arm, seed = labels["arm"], labels.get("seed")
    if arm == UNTRAINED:
        return UNTRAINED
    if arm == LORA:
        return f"lora/r{labels['rank']}_s{seed}"
    if arm == FULL:
        return f"full/s{seed}"
    return f"{labels['configuration'] or 'shared'}/{labels['mask_kind']}/k{labels['k_percent']:g}_s{seed}"


def sparse_masks(params: dict, model, kind: str, configuration: str | None, k: float, seed: int) -> dict | None:
    """The mask a sparse arm trains: stage 03's file for the spot and a stage-03 kind, a control built from the
    configuration's spot as stage 04 builds it; None where stage 03 wrote none (e.g. authors_spot outside its k)."""
    row = MASK_KINDS[kind]
    spot_file = mask_path(params, "spot", k, configuration or "global")
    if row.ablation == "stage03":
        shared = not row.per_configuration
        path = mask_path(params, kind, k, "global" if shared else configuration)
        return {n: m for n, m in MaskFile(path).items()} if path.is_file() else None
    spot = {n: m for n, m in MaskFile(spot_file).items()}
    if row.ablation == "spot":
        return spot
    return row.build(spot, seed, model, scope_shapes(model, configuration))


def plan(params: dict, model) -> list[tuple[dict, dict | int | None]]:
    """Every trained entry in run order: (labels, what it trains: a mask, LoRA's rank, or None for every parameter).
    Per seed and tuning_k: the sparse arms of every configuration (a kind shared by configurations once, a kind of one
    configuration only there), then LoRA matched to each of those arms' counts (labelled with the first k and mask kind
    that asks for its rank: one training per rank and seed); full fine-tuning once per seed. A mask with no entry (or no file) is left out."""
    arms = params["tuning_arms"]
    out = []
    for seed in params["tuning_seeds"]:
        ranks = set()
        for k in params["tuning_k"]:
            counts = {}
            for kind in (a for a in SPARSE_ARMS if a in arms):
                row = MASK_KINDS[kind]
                where = [None] if not row.per_configuration else [
                    c for c in params["configurations"] if row.configuration in (None, c)]
                for configuration in where:
                    masks = sparse_masks(params, model, kind, configuration, k, seed)
                    if masks is None or mask_count(masks) == 0:
                        continue
                    labels = run_labels(params, arm="sparse", mask_kind=kind, configuration=configuration,
                                        k_percent=k, seed=seed, n_entries=mask_count(masks))
                    counts.setdefault(labels["n_entries"], kind)
                    out.append((labels, masks))
            for count, kind in counts.items() if LORA in arms else ():
                rank = matched_lora_rank(model, count)
                if rank not in ranks:
                    ranks.add(rank)
                    out.append((run_labels(params, arm=LORA, k_percent=k, seed=seed, control_of=kind, rank=rank), rank))
        if FULL in arms:
            out.append((run_labels(params, arm=FULL, seed=seed), None))
    return out


def _digest(labels: dict, trains, batches, params: dict) -> str:
    """SHA-256 of what an entry's results depend on besides the model: what it trains, the batches, the schedule."""
    what = mask_digest(trains) if isinstance(trains, dict) else repr(trains)
    h = hashlib.sha256(json.dumps(dict(entry=entry_id(labels), trains=what, lr=params["tuning_lr"],
                                       decay=params["tuning_weight_decay"]), sort_keys=True).encode())
    for batch in batches:
        for s in batch:
            h.update(s.numpy().astype(np.int64).tobytes() + b"\0")
    return h.hexdigest()


def _trained(base_model, labels: dict, trains, params: dict):
    """A copy of the model set up to train as the entry says, and its optimizer."""
    model = copy.deepcopy(base_model)
    lr, decay = params["tuning_lr"], params["tuning_weight_decay"]
    if labels["arm"] == "sparse":
        return model, SparseAdamW(sparse_parameters(model, trains), trains, lr=lr, weight_decay=decay)
    if labels["arm"] == LORA:
        model = lora_model(model, trains, seed=labels["seed"])
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=decay)


def run(base_model, tokenizer, params: dict, subsets: dict, store: TuningStore, training: dict):
    """Measure the untrained model, then train and measure every entry of `plan` not stored with the same inputs.

    Args:
        base_model: the run's model (never trained: each entry trains a copy).
        subsets: {subset: eval sequences}; training: training_sequences' result.
        store: where each entry's frames are read from and written to.

    Returns:
        (untrained frames, {entry: (labels, frames)}).
    """
    untrained = build_evaluators(params, base_model, tokenizer, subsets, None, groups=["loss"])(["loss"])
    store.open(untrained)
    results = {}
    for labels, trains in plan(params, base_model):
        entry = entry_id(labels)
        batches = batches_for(training, params, labels["seed"])
        digest = _digest(labels, trains, batches, params)
        frames = store.get(entry, digest, GROUPS)
        if frames is None:
            model, optimizer = _trained(base_model, labels, trains, params)
            torch.manual_seed(labels["seed"])
            losses = train(model, optimizer, batches, params["tuning_lr"])
            frames = build_evaluators(params, model, tokenizer, subsets, None, groups=["loss"])(["loss"])
            trained = optimizer.n_selected if isinstance(optimizer, SparseAdamW) else trainable_count(model)
            frames["training"] = pd.DataFrame(dict(step=range(len(losses)), loss=losses, trainable_count=trained))
            store.put(entry, digest, labels, frames)
            del model, optimizer
        results[entry] = (labels, frames)
    return untrained, results


def rows_of(untrained: dict, results: dict, params: dict, vocab: int) -> list[dict]:
    """The stage's rows: per entry (each seed) loss rows against the untrained model; per arm, its seeds pooled,
    gain_rows over the code parts trained, held_out and unseen and every general-text reference; the untrained
    model's loss rows (arm 'untrained')."""
    boot = params["bootstrap_samples"]
    rows = loss_rows(untrained["loss"], None, vocab_size=vocab, **run_labels(params, arm=UNTRAINED))
    held_out = held_out_language(params)
    parts = dict(trained=[lang for lang in params["languages"] if lang != held_out], held_out=[held_out],
                 unseen=list(params["unseen_languages"]))
    arms = {}
    for labels, frames in results.values():
        labels = {k: v for k, v in labels.items() if k != "rank"}
        rows += loss_rows(frames["loss"], untrained["loss"], vocab_size=vocab, **labels)
        arms.setdefault(tuple((k, v) for k, v in labels.items() if k != "seed"), []).append(frames)
    for key, seeds in arms.items():
        trainable = int(seeds[0]["training"]["trainable_count"].iloc[0])
        labels = dict(key, n_entries=dict(key).get("n_entries") or trainable)  # a mask's count, or what trains
        rows += gain_rows([f["loss"] for f in seeds], untrained["loss"], parts, params["general_references"],
                          trainable, labels, boot)
    return rows
