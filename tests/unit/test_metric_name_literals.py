"""Readers name metrics by the constants of analysis/metric_names.py, never by a bare string: no string literal in
spot_utils/report/*.py or in a code cell of notebooks/*.ipynb equals a name of the metric-name table (nor one of
its Holm-adjusted p-value names), and no f-string piece reads a headline key such as f"{kind}.code_rise"."""
import ast
import json
import re
from pathlib import Path

from spot_utils.analysis.metric_names import METRIC_NAMES, holm_name

ROOT = Path(__file__).resolve().parents[2]

# Literals equal to a metric name that name something else; (file, text of the line) -> what they name. Each must
# still occur (test_every_exception_is_still_used), so that a stale one does not hide a new use.
NOT_METRIC_NAMES = {
    ("notebooks/03_selection.ipynb", '{"vector_share": "{:.3%}"}'): "a column of structure.summary's table",
    ("notebooks/04_ablation.ipynb", 'groups=["loss"]'): "the metric group 'loss' (measure/metric_groups.py)",
    ("notebooks/04_ablation.ipynb", 'after.equals(baseline["loss"])'): "the baseline's frame of the 'loss' group",
    ("notebooks/04_ablation.ipynb", 'name not in ("loss", "likelihood", "mc")'): "metric group names",
}


def metric_names() -> set[str]:
    """Every name of the metric-name table, and the Holm-adjusted name of each of its p-value metrics."""
    names = {name for name, _ in METRIC_NAMES.items()}
    return names | {holm_name(n) for n in names if n.startswith("p_")}


def _literals(source: str, names: set[str]):
    """(line, literal) of each string constant that equals a name, or is an f-string piece that reads one as a
    key path ('.name' / 'name.')."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.Constant) and isinstance(part.value, str) and part.value.strip(".") in names \
                        and part.value.strip(".") != part.value:
                    yield part.lineno, part.value
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
            yield node.lineno, node.value


def _notebook_cells(path: Path):
    """(cell number, source with IPython magics blanked, line of the cell's first source line in the file)."""
    text = path.read_text(encoding="utf-8")
    file_lines = text.splitlines()
    cursor = 0
    for number, cell in enumerate(json.loads(text)["cells"]):
        if cell["cell_type"] != "code" or not cell["source"]:
            continue
        source = "".join(cell["source"])  # a list of lines as nbformat writes it (or one string)
        first = json.dumps(source.splitlines(keepends=True)[0], ensure_ascii=False)
        start = next((i for i in range(cursor, len(file_lines)) if file_lines[i].strip().startswith(first)), cursor)
        cursor = start + 1
        yield number, re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M), start + 1


def bare_metric_names(root: Path = ROOT) -> list[tuple[str, int, str, str]]:
    """(file, line in the file, the literal, the line's text) of every bare metric name in the readers."""
    names, found = metric_names(), []
    for path in sorted((root / "spot_utils" / "report").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for line, literal in _literals(path.read_text(encoding="utf-8"), names):
            found.append((path.relative_to(root).as_posix(), line, literal, lines[line - 1].strip()))
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        for number, source, first_line in _notebook_cells(path):
            lines = source.splitlines()
            for line, literal in _literals(source, names):
                found.append((path.relative_to(root).as_posix(), first_line + line - 1, literal,
                              f"cell {number}: {lines[line - 1].strip()}"))
    return sorted(set(found))


def _excepted(file: str, text: str) -> bool:
    return any(f == file and snippet in text for f, snippet in NOT_METRIC_NAMES)


def test_readers_name_metrics_by_the_constants():
    bare = [f"{file}:{line}: {literal!r} in {text}" for file, line, literal, text in bare_metric_names()
            if not _excepted(file, text)]
    assert not bare, ("bare metric names (use the constants of spot_utils.analysis.metric_names):\n"
                      + "\n".join(bare))


def test_every_exception_is_still_used():
    hits = bare_metric_names()
    unused = [key for key in NOT_METRIC_NAMES if not any(f == key[0] and key[1] in text for f, _, _, text in hits)]
    assert not unused, f"NOT_METRIC_NAMES entries that match nothing any more: {unused}"


def test_the_scan_finds_a_bare_name_in_a_module_and_a_notebook(tmp_path):
    (tmp_path / "spot_utils" / "report").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "spot_utils" / "report" / "page.py").write_text(
        'from x import LOSS\n\n\ndef f(df, h, kind):\n    return df[df.metric == "matched_excess"], h.get(f"{kind}.code_rise")\n')
    notebook = {"cells": [{"cell_type": "markdown", "id": "a", "metadata": {}, "source": ["`loss_rise`"]},
                          {"cell_type": "code", "execution_count": None, "id": "b", "metadata": {}, "outputs": [],
                           "source": ["%matplotlib inline\n", "x = 1\n", "df[df.metric == \"p_holm_matched_excess\"]"]}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "notebooks" / "04_x.ipynb").write_text(json.dumps(notebook, indent=1))
    found = [(file, line, literal) for file, line, literal, _ in bare_metric_names(tmp_path)]
    cell_line = next(i for i, text in enumerate(json.dumps(notebook, indent=1).splitlines(), 1) if "p_holm" in text)
    assert found == [("notebooks/04_x.ipynb", cell_line, "p_holm_matched_excess"),
                     ("spot_utils/report/page.py", 5, ".code_rise"),
                     ("spot_utils/report/page.py", 5, "matched_excess")]
