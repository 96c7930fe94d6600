"""Where caches and run artifacts live (override with SPOT_DATA_DIR / SPOT_RUNS_DIR / SPOT_REPORTS_DIR)."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SPOT_DATA_DIR", REPO_ROOT / "data"))
RUNS_DIR = Path(os.environ.get("SPOT_RUNS_DIR", REPO_ROOT / "runs"))
REPORTS_DIR = Path(os.environ.get("SPOT_REPORTS_DIR", REPO_ROOT / "reports"))
