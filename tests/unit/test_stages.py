"""The stage table and the stage notebooks agree: one row per notebook, every figure a notebook draws is listed under
its own stage only, and each notebook imports what it uses, under the module's own name."""
import ast
import json
import re
from pathlib import Path

import pytest

from spot_utils.experiment.stages import STAGES, in_run_order, later_stages

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def code_cells(path):
    return ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_one_row_per_notebook_in_name_order():
    assert [p.stem for p in NOTEBOOKS] == list(STAGES) == sorted(STAGES)
    assert all(STAGES[p.stem].notebook_path == p for p in NOTEBOOKS)
    assert all(need in list(STAGES)[:i] for i, s in enumerate(STAGES.values()) for need in s.needs)
    assert in_run_order(["05_overlap", "01_scoring"]) == ["01_scoring", "05_overlap"]
    assert later_stages("04_ablation") == list(STAGES)[list(STAGES).index("04_ablation") + 1:]
    with pytest.raises(ValueError, match="unknown stages \\['07_x'\\]; registered: 01_scoring, 02_aggregation"):
        in_run_order(["07_x"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_a_notebook_draws_is_its_stages_only(path):
    names = [re.sub(r"\{[^}]*\}", "x", m) for c in code_cells(path) for m in re.findall(r'figure_path\(P, f?"([^"]+)"', c)]
    names += [m for c in code_cells(path) for m in re.findall(r'"(\d\d_[a-z_]+)"', c) if "figure_path(P, name)" in c]
    for name in names:
        assert [s.name for s in STAGES.values() if s.draws(name)] == [path.stem], name
    assert len(names) >= len(STAGES[path.stem].figures)  # each listed pattern is drawn by the notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_import_what_they_use_under_its_own_name(path):
    first, *rest = code_cells(path)
    tree = ast.parse("\n".join(line for line in first.splitlines() if not line.startswith("%")))
    bound = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                module = f"{node.module}.{alias.name}" if isinstance(node, ast.ImportFrom) else alias.name
                if module.startswith("spot_utils.") and alias.asname:
                    pytest.fail(f"{path.name}: {module} imported as {alias.asname}")
                bound.append(name)
    later = "\n".join(rest)
    unused = [n for n in bound if not re.search(rf"(?<![\w.\"']){re.escape(n)}\b(?!\s*=[^=])", later)]
    assert not unused, f"{path.name} imports {unused} and never uses them"
