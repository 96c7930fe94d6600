"""Stage pages and the index render offline: no script or stylesheet from the network, math as MathML, a title
from the notebook's heading and a navigation bar."""
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from spot_utils.base.io import write_json
from spot_utils.report.pages import latex_to_mathml, render_html, render_run

ROOT = Path(__file__).resolve().parents[2]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(page: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def external_resources(page: str) -> list[str]:
    """URLs of scripts and linked resources that a browser would fetch from the network."""
    urls = [a.get("src") or a.get("href") or "" for t, a in tags(page) if t in ("script", "link")]
    return [u for u in urls if re.match(r"^(https?:)?//", u)]


def test_external_resources_are_found():
    assert external_resources('<script src="https://cdn.x/m.js"></script><link href="//f.x/a.css"><script>1</script>'
                              ) == ["https://cdn.x/m.js", "//f.x/a.css"]


@pytest.mark.parametrize("page", sorted((ROOT / "reports").glob("**/*.html")), ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_pages_load_nothing_from_the_network(page):
    assert external_resources(page.read_text()) == []


def test_latex_becomes_mathml_outside_code():
    md = "Score $S_l = \\theta \\odot g$ and\n\n$$A = \\sum_l |S_l|,$$\n\ncosts `$5` in ```\n$x$\n``` blocks."
    out = latex_to_mathml(md)
    assert out.count("<math") == 2 and out.count('display="block"') == 1 and "<msub><mi>S</mi><mi>l</mi></msub>" in out
    assert "`$5`" in out and "```\n$x$\n```" in out  # code untouched
    assert "$" not in out.replace("`$5`", "").replace("```\n$x$\n```", "")


def _stage_notebook(path: Path, heading: str, widget: bool = False):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {heading}\n\nThe rise $r_x = L_a/L_b - 1$."),
                nbformat.v4.new_code_cell("secret_code_line()")]
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="a result\n")]
    if widget:
        nb.cells[1].outputs.append(nbformat.v4.new_output(
            "display_data", data={"text/plain": "VBox(children=...)",
                                  "application/vnd.jupyter.widget-view+json": {"model_id": "x", "version_major": 2}}))
    nbformat.write(nb, str(path))


def test_stage_page_has_title_navigation_math_and_no_code(tmp_path):
    run = tmp_path / "reports" / "r"
    run.mkdir(parents=True)
    for stage, heading in (("01_scoring", "01 · Scoring"), ("02_aggregation", "02 · Aggregation: sums"),
                           ("04_ablation", "04 · Ablation")):
        _stage_notebook(run / f"{stage}.ipynb", heading, widget=stage == "02_aggregation")
    write_json(run / "metrics.json", [])
    (run / "05_pairs.csv").write_text("a,b\n")
    pages = render_run(run)
    assert [p.name for p in pages] == ["01_scoring.html", "02_aggregation.html", "04_ablation.html"]
    page = (run / "02_aggregation.html").read_text()
    assert re.search(r"<title>02 · Aggregation: sums</title>", page)
    hrefs = [a["href"] for t, a in tags(page) if t == "a" and "href" in a]
    for target in ("../index.html", "01_scoring.html", "04_ablation.html", "02_aggregation.ipynb", "metrics.json",
                   "05_pairs.csv"):
        assert target in hrefs, target
    assert "<math" in page and "$" not in page.split("<main>")[1] and "a result" in page
    assert "secret_code_line" not in page and "VBox" not in page and external_resources(page) == []
    first = (run / "01_scoring.html").read_text()
    assert "← " not in first and 'href="02_aggregation.html"' in first


def test_render_html_rewrites_one_page(tmp_path):
    _stage_notebook(tmp_path / "03_selection.ipynb", "03 · Selection")
    out = render_html(tmp_path / "03_selection.ipynb")
    assert out == tmp_path / "03_selection.html" and "<title>03 · Selection</title>" in out.read_text()


def test_runs_and_reports_follow_the_working_directory(tmp_path):
    clone = tmp_path / "clone"
    (clone / "spot_utils" / "base").mkdir(parents=True)
    (clone / "spot_utils" / "base" / "paths.py").write_text("")
    (clone / "notebooks").mkdir()
    code = "from spot_utils.base import paths; print(paths.RUNS_DIR); print(paths.REPORTS_DIR)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")} | {"PYTHONPATH": str(ROOT)}

    def dirs(cwd, **extra):
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env | extra, capture_output=True, text=True,
                             check=True).stdout.split()
        return [Path(p) for p in out]

    assert dirs(clone / "notebooks") == [clone.resolve() / "runs", clone.resolve() / "reports"]
    assert dirs(tmp_path) == [ROOT / "runs", ROOT / "reports"]  # outside a clone: the package's own folder
    assert dirs(clone, SPOT_RUNS_DIR=str(tmp_path / "r"), SPOT_REPORTS_DIR=str(tmp_path / "p")) == [tmp_path / "r", tmp_path / "p"]


def test_reports_show_paths_without_a_machine_prefix(tmp_path):
    (tmp_path / "elsewhere" / "run-a").mkdir(parents=True)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a").symlink_to(tmp_path / "elsewhere" / "run-a")  # a run folder linked in
    code = ("from spot_utils.base import paths; print(paths.shown(paths.RUNS_DIR / 'a' / 'masks')); "
            "print(paths.shown(paths.REPORTS_DIR / 'a' / 'metrics.json')); print(paths.shown(paths.REPO_ROOT / 'params'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOT_")} | {
        "PYTHONPATH": str(ROOT), "SPOT_RUNS_DIR": str(tmp_path / "runs"), "SPOT_REPORTS_DIR": str(tmp_path / "out")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["runs/a/masks", "reports/a/metrics.json", "params"]


def test_math_uses_glyphs_common_fonts_have():
    from spot_utils.report.pages import latex_to_mathml
    math = latex_to_mathml(r"the region $T_l \setminus T_m$")
    assert "&#x029F5;" not in math and "<mo>&#x2216;</mo>" in math  # U+29F5 is an empty box; U+2216 SET MINUS
