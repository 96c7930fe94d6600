"""Where caches and run artifacts live (override with SPOT_DATA_DIR / SPOT_RUNS_DIR / SPOT_REPORTS_DIR).

The repository is the one that holds the working directory (a notebook runs in notebooks/, the pipeline from the
root), not the one spot_utils was imported from: a second clone using the same environment writes into itself.
Outside any clone of the repository, the package's own folder is used.
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def is_repository(folder: Path) -> bool:
    """A checkout of this project: the package folder and the stage notebooks side by side."""
    return (folder / "spot_utils" / "base" / "paths.py").is_file() and (folder / "notebooks").is_dir()


def find_repository(start: str | Path | None = None) -> Path:
    """The checkout that holds `start` (default: the working directory), else the package's own folder."""
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if is_repository(folder):
            return folder
    return PACKAGE_ROOT


REPO_ROOT = find_repository()
DATA_DIR = Path(os.environ.get("SPOT_DATA_DIR", REPO_ROOT / "data"))
RUNS_DIR = Path(os.environ.get("SPOT_RUNS_DIR", REPO_ROOT / "runs"))
REPORTS_DIR = Path(os.environ.get("SPOT_REPORTS_DIR", REPO_ROOT / "reports"))


def shown(path: str | Path) -> str:
    """A path as a report prints it, with no machine-specific prefix: relative to the repository, or under the
    names runs/, reports/ and data/ when SPOT_RUNS_DIR, SPOT_REPORTS_DIR or SPOT_DATA_DIR put them elsewhere."""
    path = Path(os.path.abspath(path))  # links kept: a run folder linked into the runs folder is shown there
    for root, name in ((REPORTS_DIR, "reports"), (RUNS_DIR, "runs"), (DATA_DIR, "data"), (REPO_ROOT, "")):
        root = Path(os.path.abspath(root))
        if path.is_relative_to(root):
            return str(Path(name) / path.relative_to(root))
    return str(path)


def resolve_path(path: str | None) -> Path | None:
    """A params path, relative to the repository root unless absolute."""
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p
