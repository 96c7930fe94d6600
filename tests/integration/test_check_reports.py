"""tools/check_reports.py in Debian's Chromium (skipped where it is absent): it finds what a reader would meet on a
phone and at 1,280 px (a page without a viewport tag, a table past its box, a glyph no font draws) and passes a
page without them; the committed reports pass it (slow)."""
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file() or shutil.which("fc-list") is None,
                                reason="needs Debian's chromium and fontconfig")
pytest.importorskip("playwright")
sys.path.insert(0, str(ROOT / "tools"))
import check_reports  # noqa: E402

GOOD = ("<!DOCTYPE html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, "
        "initial-scale=1'></head><body><p>A ∖ B</p><table><tr><td>one</td><td>two</td></tr></table></body></html>")
WIDE = ("<!DOCTYPE html><html><head><meta charset='utf-8'></head><body><div style='overflow-x:auto'><table><tr>"
        + "".join(f"<td style='white-space:nowrap'>column_{i}_wide</td>" for i in range(30))
        + "</tr></table></div><p>A ⧵ B</p></body></html>")


def _check(tmp_path, body: str, capsys) -> str:
    (tmp_path / "index.html").write_text(body, encoding="utf-8")
    status = check_reports.main([str(tmp_path), "--chromium", CHROMIUM, "--screenshots", str(tmp_path / "shots")])
    return status, capsys.readouterr().out


def test_a_page_that_fits_passes(tmp_path, capsys):
    status, out = _check(tmp_path, GOOD, capsys)
    assert status == 0, out


def test_a_wide_table_a_missing_viewport_and_a_missing_glyph_are_found(tmp_path, capsys):
    status, out = _check(tmp_path, WIDE, capsys)
    assert status == 1
    assert "no <meta name=viewport>" in out and "px past its box (window 390 px)" in out
    assert "px past its box (window 1280 px)" in out and "U+29F5" in out


@pytest.mark.slow
def test_the_committed_reports_pass(capsys):
    status = check_reports.main([str(ROOT / "reports"), "--chromium", CHROMIUM])
    assert status == 0, capsys.readouterr().out
