"""Combining per-language scores into one aggregate per parameter (docs/METHOD.md, Aggregation).

Languages are folded in one at a time, so memory holds the aggregate and one language's scores whatever the
number of languages (rank_mean adds one sorted float32 copy of that language's |S|).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from ..base.run_files import TensorFile, indexed, streaming_saver, tensors_of

AGGREGATIONS = ("sum_abs", "normalized_sum", "rank_mean", "min", "max")


def aggregate(scores_by_lang: dict[str, dict[str, torch.Tensor] | str | Path], method: str = "sum_abs") -> dict[str, torch.Tensor]:
    """A ≥ 0 per parameter from {language: {param: signed score}}.

    The values may also be paths of score files written by `spot_utils.runs.save_tensors`: each is then read when
    its turn comes and dropped after, so at most one language's scores are held beside the aggregate. Same
    result either way.

    sum_abs: Σ_l |S_l| (the paper's); normalized_sum: Σ_l |S_l| / Σ|S_l| over all entries;
    rank_mean: mean over languages of the percentile rank of |S_l| among all scoped entries;
    min / max: elementwise over languages of |S_l|.

    Args:
        scores_by_lang: {language: scores or the path of a score file}; every language has the same tensors.
        method: a name in AGGREGATIONS.

    Returns:
        {parameter name: float32 aggregate, ≥ 0}.
    """
    folder = Aggregator(method, len(scores_by_lang))
    for lang, value in scores_by_lang.items():
        folder.add(lang, tensors_of(value))
    return folder.result()


class Aggregator:
    """`aggregate` one language at a time: add(lang, scores) for each of n_languages languages, then result()."""

    def __init__(self, method: str, n_languages: int):
        if method not in AGGREGATIONS:
            raise ValueError(f"unknown aggregation {method!r}; accepted: {AGGREGATIONS}")
        if n_languages < 1:
            raise ValueError("aggregate needs the scores of at least one language")
        self.method, self.n_languages = method, n_languages
        self.first, self.names, self.out, self.added = None, None, None, 0

    def add(self, lang: str, scores: dict[str, torch.Tensor]) -> None:
        """Fold one language's signed scores into the aggregate."""
        if self.added == self.n_languages:
            raise ValueError(f"all {self.n_languages} languages were already added; {lang!r} is one too many")
        if self.out is None:
            self.first, self.names = lang, list(scores)
            self.out = {n: torch.zeros_like(scores[n], dtype=torch.float32) for n in self.names}
        elif scores.keys() != set(self.names):
            raise ValueError(f"scores of {lang!r} cover other parameters than those of {self.first!r}")
        else:
            for n in self.names:
                shape, first = tuple(scores[n].shape), tuple(self.out[n].shape)
                if shape != first:
                    raise ValueError(f"scores of {n!r} of {lang!r} has shape {shape}, of {self.first!r} {first}")
        method, out = self.method, self.out
        scale = 1.0
        if method == "normalized_sum":
            total = sum(s.abs().double().sum() for s in scores.values())
            scale = 1.0 / float(total) if total > 0 else 0.0
        values = _percentile_ranks(scores) if method == "rank_mean" else ((n, s.abs().float()) for n, s in scores.items())
        for n, value in values:
            if method in ("sum_abs", "normalized_sum"):
                out[n].add_(value, alpha=scale)
            elif method == "rank_mean":
                out[n].add_(value, alpha=1.0 / self.n_languages)
            elif self.added == 0:
                out[n].copy_(value)
            else:
                torch.minimum(out[n], value, out=out[n]) if method == "min" else torch.maximum(out[n], value, out=out[n])
        self.added += 1

    def result(self) -> dict[str, torch.Tensor]:
        """The aggregate, once every language was added."""
        if self.added != self.n_languages:
            raise ValueError(f"{self.added} of {self.n_languages} languages were added: add the others first")
        return self.out


def _percentile_ranks(scores: dict[str, torch.Tensor]):
    """(name, percentile rank in [0, 1] of every |score| among all entries), tensor by tensor (ties share the
    lower rank).

    One sorted float32 copy of all |scores| (sorted in place, no index array); each tensor's ranks are made when
    asked for, so at most one tensor's ranks exist at a time.
    """
    sorted_vals = torch.cat([s.abs().float().flatten() for s in scores.values()])
    sorted_vals.numpy().sort()
    denom = max(len(sorted_vals) - 1, 1)
    for n, s in scores.items():
        yield n, (torch.searchsorted(sorted_vals, s.abs().float().flatten()).float() / denom).view(s.shape)


def aggregate_files(score_paths: dict[str, str | Path], general_score_path: str | Path, aggregate_out: str | Path,
                    general_out: str | Path, method: str, manifests: tuple[dict, dict], sample: int = 200_000,
                    gen: torch.Generator | None = None) -> dict:
    """Stage 02 from files, tensor by tensor: A (the aggregate of `score_paths`, {language: score file}) and G
    (`general_reference` of the general score) written (run_files.streaming_saver) as each tensor is folded, so
    memory holds one tensor of A, of G and of one language's scores at a time, whatever the number of tensors and
    languages (rank_mean excepted: its percentile ranks need one language's sorted |S| over all tensors, so it
    folds the languages in memory as `aggregate` does).

    Also returns what the stage reports, read in the same pass: {"totals": {language: Σ|S|}, "samples":
    {language, then the general language's name "general", then "aggregate": |S| at `sample` random entries}},
    each sample equal to report.plots.sample_abs of that score drawn in that order from `gen`.
    Files equal those of aggregate + general_reference + save_tensors (manifests: (aggregate's, general's)).
    """
    langs = list(score_paths)
    Aggregator(method, len(langs))  # checks the method and the number of languages
    files = {lang: TensorFile(p) for lang, p in score_paths.items()}
    general_file = TensorFile(general_score_path)
    shapes = general_file.shapes
    for lang, f in files.items():
        if f.shapes != shapes:
            raise ValueError(f"scores of {lang!r} ({f.path}) cover other parameters or shapes than {general_file.path}")
    sizes = torch.tensor([math.prod(shapes[n]) for n in general_file], dtype=torch.int64)
    total = int(sizes.sum())
    picks = {src: _sample_positions(sizes, min(sample, total), gen) for src in [*langs, "general", "aggregate"]}
    samples = {src: torch.empty(len(p[0])) for src, p in picks.items()}
    totals = {lang: 0 for lang in langs}
    general_scale, scales = 1.0, {lang: 1.0 for lang in langs}
    if method == "rank_mean":
        in_memory = aggregate(score_paths, method)
        general = aggregate({"general": general_score_path}, method)
    elif method == "normalized_sum":  # one pass per file for its Σ|S| (the same sum Aggregator.add takes)
        scales = {lang: _inverse_total(f) for lang, f in files.items()}
        general_scale = _inverse_total(general_file)

    with streaming_saver(aggregate_out, shapes, manifests[0]) as a_file, \
            streaming_saver(general_out, shapes, manifests[1]) as g_file:
        for i, n in enumerate(general_file):
            a = torch.zeros(shapes[n], dtype=torch.float32)
            for j, lang in enumerate(langs):  # one language's tensor at a time, folded as Aggregator.add folds it
                s = files[lang][n]
                totals[lang] = totals[lang] + s.abs().double().sum()
                _fill_sample(samples[lang], picks[lang], sizes, i, s)
                if method != "rank_mean":
                    _fold_into(a, method, s, scales[lang], first=j == 0)
                del s
            g = general_file[n]
            _fill_sample(samples["general"], picks["general"], sizes, i, g)
            if method == "rank_mean":
                a, g = in_memory[n], general[n]
            elif method == "sum_abs":
                g = g.abs().float() * len(langs)
            else:
                g = _fold_into(torch.zeros(shapes[n], dtype=torch.float32), method, g, general_scale, first=True)
            _fill_sample(samples["aggregate"], picks["aggregate"], sizes, i, a)
            a_file.write(n, a)
            g_file.write(n, g)
    indexed(a_file), indexed(g_file)
    return {"totals": {lang: float(t) for lang, t in totals.items()}, "samples": samples}


def _fold_into(out: torch.Tensor, method: str, s: torch.Tensor, scale: float, first: bool) -> torch.Tensor:
    """Fold one language's tensor of scores into that tensor of the aggregate: Aggregator.add's arithmetic, in the
    same order (so the same bits)."""
    value = s.abs().float()
    if method in ("sum_abs", "normalized_sum"):
        out.add_(value, alpha=scale)
    elif first:
        out.copy_(value)
    else:
        torch.minimum(out, value, out=out) if method == "min" else torch.maximum(out, value, out=out)
    return out


def _inverse_total(scores) -> float:
    total = sum(scores[n].abs().double().sum() for n in scores)
    return 1.0 / float(total) if total > 0 else 0.0


def _sample_positions(sizes: torch.Tensor, n: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """(flat index over all tensors, tensor number) of n entries drawn as report.plots.sample_abs draws them."""
    idx = torch.randint(0, int(sizes.sum()), (n,), generator=gen)
    return idx, torch.searchsorted(sizes.cumsum(0), idx, right=True)


def _fill_sample(out: torch.Tensor, picks, sizes: torch.Tensor, i: int, t: torch.Tensor) -> None:
    """Put |t| at the sampled entries that fall in tensor number i."""
    idx, which = picks
    sel = (which == i).nonzero().flatten()
    start = int(sizes[:i].sum())
    out[sel] = t.reshape(-1)[idx[sel] - start].abs().float()


def aggregate_to_file(score_paths: dict[str, str | Path], out: str | Path, method: str, manifest: dict) -> TensorFile:
    """`aggregate` of score files written to `out` tensor by tensor (one tensor of the aggregate and of one
    language's scores in memory; rank_mean folds in memory, as in aggregate_files); returns the file, to read on
    access. Same bytes as save_tensors(out, aggregate(score_paths, method), manifest)."""
    langs = list(score_paths)
    Aggregator(method, len(langs))
    files = {lang: TensorFile(p) for lang, p in score_paths.items()}
    shapes = files[langs[0]].shapes
    for lang, f in files.items():
        if f.shapes != shapes:
            raise ValueError(f"scores of {lang!r} ({f.path}) cover other parameters or shapes than {files[langs[0]].path}")
    in_memory = aggregate(score_paths, method) if method == "rank_mean" else None
    scales = ({lang: _inverse_total(f) for lang, f in files.items()} if method == "normalized_sum"
              else {lang: 1.0 for lang in langs})
    with streaming_saver(out, shapes, manifest) as writer:
        for n in shapes:
            if in_memory is not None:
                writer.write(n, in_memory[n])
                continue
            a = torch.zeros(shapes[n], dtype=torch.float32)
            for j, lang in enumerate(langs):
                _fold_into(a, method, files[lang][n], scales[lang], first=j == 0)
            writer.write(n, a)
    indexed(writer)
    return TensorFile(out)
