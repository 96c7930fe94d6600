"""The table of mask kinds (docs/METHOD.md, Mask kinds): every mask the pipeline writes, ablates or draws, with what
builds it, which stage writes it, how stage 04 ablates it, its colour and marker, what a control is matched on, and
which readers show it (headline, README block, notebook 04's verdicts and collapse curves, stage 03's layer map).
The plan, the paired tests, the figures, the tables and the README block read this table; adding a mask kind is one
register_mask_kind call (a control: register_control) plus its builder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..base.registry import Registry
from ..base.run_files import mask_path
from .ablation import magnitude_per_tensor, random_per_tensor, random_uniform
from .masks import MaskFile
from .selection import configuration_spot, configuration_top_count, iter_regions, select_top_k

# how stage 04 gets a kind, in plan order at a headline k after the spot itself:
#   control    build(spot, seed, model, shapes): sized like the spot, counts checked (matched_on), seeds pooled
#   from_spot  build(spot, params, k_percent, configuration): a part of the spot (an empty mask is skipped)
#   stage03    build(spot, params, k_percent, configuration): read from (or built on) stage 03's files
# and separately: 'baseline' (no mask), 'spot' (every k), 'outliers' (the aggregate's top n entries), None (not
# ablated: stage 03 writes it for the overlaps, the layer map or the mask modes only)
ABLATIONS = ("baseline", "spot", "control", "from_spot", "stage03", "outliers", None)
MATCHED_ON = ("per_tensor", "total", None)
CONTROL_SEEDS = ("uniform", "all", None)
EXTRA_COLORS = ("#01665e", "#35978f", "#bf812d", "#762a83")  # kinds registered without a colour; none of the table's


@dataclass(frozen=True)
class MaskKind:
    """A row of the mask-kind table.

    build: what builds it (signature by `ablation`, see ABLATIONS; for a stage-03 kind stage 03 does not read from
    here, the selection function that builds it); stage: the stage that writes its masks ('03_selection', or
    '04_ablation' for masks built in memory); ablation: one of ABLATIONS; color / marker: the same in every figure
    (None: one of EXTRA_COLORS by registration order); matched_on, seeds, every_k: a control's count check
    ('per_tensor', 'total' or None), seeds ('uniform': the first n_uniform_seeds, 'all', None: one unseeded mask) and
    whether it runs at every k; heavy: it gets the heavy metric groups at k_detail; per_configuration: False for one mask shared by every
    configuration; headline, verdict, collapse_curve, layer_map: read by the run headline, notebook 04's verdicts and
    collapse curves, stage 03's per-layer summary; readme: its position in the README block's table (None: absent);
    k_param: for a stage-03 kind ablated at its own k values rather than the headline ones, the parameter that lists
    them; configuration: the one configuration that builds it (None: every configuration, or one mask for all).
    """
    build: Callable | None
    stage: str | None
    ablation: str | None
    color: str | None = None
    marker: str = "o"
    matched_on: str | None = None
    seeds: str | None = None
    every_k: bool = False
    heavy: bool = False
    per_configuration: bool = True
    headline: bool = False
    readme: int | None = None
    verdict: bool = False
    collapse_curve: bool = False
    layer_map: bool = False
    k_param: str | None = None
    configuration: str | None = None

    def built_in(self, configuration: str) -> bool:
        """Whether this kind has masks in `configuration` (its one configuration, or every one)."""
        return self.configuration in (None, configuration)


MASK_KINDS = Registry("mask kind")
REFERENCE_CONTROL = "random_uniform"  # every other mask is tested against it (paired tests, Holm per family)
OUTLIERS = "top_entries"  # the aggregate's top n entries alone: the spot's curve below its k grid
STAGES = ("03_selection", "04_ablation", None)


def register_mask_kind(name: str, *, build: Callable | None, stage: str | None, ablation: str | None,
                       **fields) -> MaskKind:
    """Add a row to the mask-kind table (fields: see MaskKind); an ablated kind without a callable builder, an
    unknown ablation, stage, matched_on or seeds value is refused."""
    if ablation not in ABLATIONS:
        raise ValueError(f"mask kind {name!r}: ablation must be one of {ABLATIONS}, got {ablation!r}")
    if stage not in STAGES:
        raise ValueError(f"mask kind {name!r}: stage must be one of {STAGES}, got {stage!r}")
    if ablation in ("control", "from_spot", "stage03") and not callable(build):
        raise ValueError(f"mask kind {name!r} has no implementation: build= must be callable")
    if fields.get("matched_on") not in MATCHED_ON:
        raise ValueError(f"mask kind {name!r}: matched_on must be one of {MATCHED_ON}, got {fields['matched_on']!r}")
    if fields.get("seeds") not in CONTROL_SEEDS:
        raise ValueError(f"mask kind {name!r}: seeds must be one of {CONTROL_SEEDS}, got {fields['seeds']!r}")
    entry = MaskKind(build, stage, ablation, **fields)
    MASK_KINDS.add(name, entry)
    return entry


def register_control(name: str, *, build: Callable, matched_on: str | None, seeds: str | None = None,
                     every_k: bool = False, **fields) -> MaskKind:
    """Add a control mask (a kind stage 04 builds from the spot: build(spot, seed, model, shapes) -> masks)."""
    if not callable(build):
        raise ValueError(f"control {name!r} has no implementation: build= must be callable")
    return register_mask_kind(name, build=build, stage="04_ablation", ablation="control", matched_on=matched_on,
                              seeds=seeds, every_k=bool(every_k), **fields)


def kinds(**where) -> tuple[str, ...]:
    """Names of the rows whose fields equal `where` (e.g. kinds(ablation='control'), kinds(headline=True)), in
    table order."""
    return tuple(n for n, k in MASK_KINDS.items() if all(getattr(k, f) == v for f, v in where.items()))


def controls() -> dict[str, MaskKind]:
    """{name: row} of the control masks, in plan order."""
    return {n: MASK_KINDS[n] for n in kinds(ablation="control")}


def is_control(kind: str) -> bool:
    return kind in MASK_KINDS and MASK_KINDS[kind].ablation == "control"


def readme_kinds() -> tuple[str, ...]:
    """The kinds of the README block's table, in its order."""
    return tuple(sorted((n for n, k in MASK_KINDS.items() if k.readme is not None), key=lambda n: MASK_KINDS[n].readme))


def _spot_norms(spot, params, k_percent, configuration):
    return {n: m for n, m in spot.items() if m.ndim < 2}


def _stage03_shared(kind: str):
    def read(spot, params, k_percent, configuration):
        return MaskFile(mask_path(params, kind, k_percent))  # read one tensor at a time when ablated
    return read


def _stage03_own(kind: str):
    def read(spot, params, k_percent, configuration):
        return MaskFile(mask_path(params, kind, k_percent, configuration))
    return read


register_mask_kind("baseline", build=None, stage=None, ablation="baseline", color="#4d4d4d", heavy=True)
register_mask_kind("spot", build=configuration_spot, stage="03_selection", ablation="spot", color="#d55e00", heavy=True,
                   headline=True, readme=0, verdict=True, collapse_curve=True, layer_map=True)
# the mask the authors' released code zeroes (method/authors_spot.py), in the configuration that builds it, at its k
register_mask_kind("authors_spot", build=_stage03_own("authors_spot"), stage="03_selection", ablation="stage03",
                   marker="p", color="#117733", heavy=True, headline=True, readme=1, verdict=True, collapse_curve=True,
                   k_param="authors_spot_k", configuration="paper")
# controls, in plan order: random_uniform at every k, then (at the headline k values) random per tensor and magnitude
register_control(REFERENCE_CONTROL, build=lambda spot, seed, model, shapes: random_uniform(spot, seed, shapes),
                 matched_on="total", seeds="uniform", every_k=True, marker="s", color="#56b4e9", heavy=True,
                 headline=True, readme=2, collapse_curve=True)
register_control("random", build=lambda spot, seed, model, shapes: random_per_tensor(spot, seed),
                 matched_on="per_tensor", seeds="all", marker="P", color="#0072b2", collapse_curve=True)
register_control("magnitude", build=lambda spot, seed, model, shapes: magnitude_per_tensor(model, spot),
                 matched_on="per_tensor", marker="^", color="#009e73", verdict=True, collapse_curve=True)
register_mask_kind("spot_norms", build=_spot_norms, stage="04_ablation", ablation="from_spot", marker="v",
                   color="#cc6677",
                   verdict=True)
register_mask_kind("code_over_general", build=_stage03_shared("code_over_general"), stage="03_selection",
                   ablation="stage03", marker="*", color="#aa4499", heavy=True, per_configuration=False,
                   headline=True, readme=3, verdict=True, collapse_curve=True, layer_map=True)
register_mask_kind("code_minus_general", build=_stage03_shared("code_minus_general"), stage="03_selection",
                   ablation="stage03", marker="X", color="#332288", per_configuration=False, verdict=True,
                   layer_map=True)
register_mask_kind(OUTLIERS, build=configuration_top_count, stage="04_ablation", ablation="outliers", marker="D",
                   color="#882255")
register_mask_kind("magnitude_global", build=select_top_k, stage="03_selection", ablation=None, marker="<",
                   color="#999933",
                   layer_map=True)
register_mask_kind("general", build=select_top_k, stage="03_selection", ablation=None, marker="h", color="#e69f00",
                   layer_map=True)
register_mask_kind("shared", build=iter_regions, stage="03_selection", ablation=None, color="#111111", layer_map=True)
register_mask_kind("union", build=iter_regions, stage="03_selection", ablation=None, color="#a6a6a6", layer_map=True)
register_mask_kind("specific", build=iter_regions, stage="03_selection", ablation=None, color="#ddcc77")
