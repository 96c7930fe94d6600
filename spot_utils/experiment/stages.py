"""The pipeline's stages, one row each: its name, its notebook, the earlier stages whose outputs it reads, and what it
writes. The pipeline, the stage checks, the report pages, the index and the tests read the stages from here; adding a
stage is one `register_stage` call (or one row below) plus its notebook.

Stages run in the order of their names (the number prefix): a stage named `03b_x` runs between `03_selection` and
`04_ablation`. Before a stage runs, the pipeline deletes what an earlier sitting of that stage left in
reports/<run>/: its `report_files` and the figures matching its `figures` patterns, and nothing of any other stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..base.paths import REPO_ROOT
from ..base.registry import Registry

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage.

    Attributes:
        name: the stage's name, `<number>_<what>`; its notebook is notebooks/<name>.ipynb unless `notebook` is given.
        needs: earlier stages whose outputs this one reads (it refuses to start before they finished).
        reads: what the stage reads, in words (docs/METHOD.md, Stages, says it in full).
        writes: what the stage writes under runs/<run>/, in words.
        report_files: files the stage writes in reports/<run>/ (deleted before it runs).
        figures: glob patterns of the names (without .png) of the figures it draws in reports/<run>/figures/.
        notebook: the notebook's path, when it is not notebooks/<name>.ipynb.
    """
    name: str
    needs: tuple[str, ...] = ()
    reads: str = ""
    writes: str = ""
    report_files: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    notebook: Path | None = None

    @property
    def notebook_path(self) -> Path:
        return Path(self.notebook) if self.notebook is not None else NOTEBOOK_DIR / f"{self.name}.ipynb"

    def draws(self, figure: str) -> bool:
        """Whether a figure name (a file name or its stem) is one of this stage's."""
        return any(fnmatch(Path(figure).stem, pattern) for pattern in self.figures)

    def stale_outputs(self, report_dir: Path) -> list[Path]:
        """The files of this stage in a report folder, as an earlier sitting left them."""
        figures = sorted((Path(report_dir) / "figures").glob("*.png"))
        return [*(p for p in (Path(report_dir) / f for f in self.report_files) if p.is_file()),
                *(p for p in figures if self.draws(p.name))]


STAGES = Registry("stage")  # name -> Stage, in run order


def register_stage(name: str, *, needs=(), reads: str = "", writes: str = "", report_files=(), figures=(),
                   notebook: str | Path | None = None) -> Stage:
    """Add a stage to the table, in the order of its name.

    Args:
        name: `<number>_<what>`, e.g. '07_tuning'; a new name.
        needs, reads, writes, report_files, figures, notebook: the `Stage` fields.

    Returns:
        The registered row.

    Raises:
        ValueError: the name is taken or malformed, a needed stage is unknown or does not run before this one, a report
            file or figure pattern is another stage's, or a notebook given does not exist.
    """
    row = Stage(name, tuple(needs), reads, writes, tuple(report_files), tuple(figures),
                None if notebook is None else Path(notebook))
    if not isinstance(name, str) or not name[:1].isdigit() or "_" not in name:
        raise ValueError(f"a stage is named <number>_<what> (its position in the run), got {name!r}")
    for need in row.needs:
        STAGES.pick(need)
        if need >= name:
            raise ValueError(f"stage {name!r} needs {need!r}, which does not run before it (stages run in name order)")
    for other in STAGES.values():
        taken = set(row.report_files) & set(other.report_files)
        shared = [f for f in row.figures if other.draws(f)] + [f for f in other.figures if row.draws(f)]
        if taken or shared:
            raise ValueError(f"stage {name!r}: {sorted(taken | set(shared))} already belong to stage {other.name!r}")
    if row.notebook is not None and not row.notebook_path.is_file():  # the table's own are the repository's
        raise ValueError(f"stage {name!r}: no notebook at {row.notebook_path}")
    STAGES.add(name, row)
    ordered = sorted(STAGES.items())
    STAGES.clear()
    STAGES.update(ordered)
    return row


def in_run_order(names) -> list[str]:
    """`names` in the order the stages run; ValueError naming the table's stages for an unknown one."""
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stages {unknown}; registered: {', '.join(STAGES)}")
    return [s for s in STAGES if s in set(names)]


def later_stages(name: str) -> list[str]:
    """The stages that run after `name` (their inputs change when it runs again)."""
    STAGES.pick(name)
    return [s for s in STAGES if s > name]


register_stage("01_scoring", reads="the model; the score split of every scored language and of general_language",
               writes="scores/<lang>.safetensors and its two halves, checkpoints while running")
register_stage("02_aggregation", needs=("01_scoring",), reads="the scores of the code languages and of the general text",
               writes="aggregate.safetensors (A) and general.safetensors (G)", figures=("02_score_distribution",))
register_stage("03_selection", needs=("01_scoring", "02_aggregation"),
               reads="A, G, each language's scores and the model's weights",
               writes="masks/<kind>/k<k>_<configuration>.safetensors", report_files=("03_layers_modules.csv",),
               figures=("03_spot_layers_modules",))
register_stage("04_ablation", needs=("02_aggregation", "03_selection"),
               reads="the model, the eval split, the evaluation sets, A and the masks of stage 03",
               writes="ablation/<entry>.json as it goes", report_files=("metrics.json", "metrics.csv"),
               figures=("04_damage_*", "04_collapse_curves_*", "04_reference_likelihood", "04_multiple_choice",
                        "04_cross_ablation"))
register_stage("05_overlap", needs=("01_scoring", "03_selection"),
               reads="the language masks, magnitude_global, general, spot, shared, the half scores; other runs' spots",
               report_files=("05_pairs.csv", "05_references.csv", "05_stability.csv"),
               figures=("05_jaccard", "05_obs_over_expected", "05_obs_over_expected_per_tensor", "05_upset",
                        "05_modules_by_language", "05_layers_by_language", "05_stability", "05_models_depth",
                        "05_models_modules"))
register_stage("06_explore", reads="reports/<run>/ only: metrics.json, manifest.json, 03_layers_modules.csv")
register_stage("07_tuning", needs=("03_selection",),
               reads="the model, stage 03's masks, score-split windows after stage 01's and the eval split",
               writes="tuning/<entry>.json as it goes", report_files=("07_tuning.json", "07_tuning.csv"),
               figures=("07_gain_vs_forgetting_*", "07_gain_vs_trainable"))
