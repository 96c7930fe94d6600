"""tools/check_notebook_saves.py end to end (slow; skipped without Debian's Chromium, JupyterLab or playwright): a
fresh clone of this checkout's branch, every notebook opened and saved in JupyterLab, 06_explore run first, and
`git status --porcelain` empty afterwards."""
import importlib.util
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="needs Debian's chromium"),
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("jupyterlab", "playwright")),
                                 reason="needs jupyterlab and playwright")]
sys.path.insert(0, str(ROOT / "tools"))
import check_notebook_saves  # noqa: E402


def test_a_fresh_clone_stays_clean_after_every_notebook_is_saved_in_jupyterlab(tmp_path, capsys):
    branch = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    status = check_notebook_saves.main(["--branch", branch, "--into", str(tmp_path / "clone"), "--chromium", CHROMIUM])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "git status --porcelain in" in out and "(empty)" in out
