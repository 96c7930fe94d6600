"""The package's layout: role packages whose imports point down only, no import cycle, and no function-level import
that hides an arrow (each one left defers a heavy optional dependency and says so)."""
import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "spot_utils"
ROLES = ("base", "data", "method", "measure", "analysis", "experiment", "report")  # lowest first
MAX_TOP_MODULES = 8


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, ast.stmt, bool]]:
    """(imported spot_utils module, node, at module level) for every import of a spot_utils module in `path`."""
    known = modules()
    own = module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    out = []
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            if not stem.startswith("spot_utils"):
                continue
            for alias in node.names:  # `from pkg import module` names a module; otherwise the module is `stem`
                target = f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in known else stem
                out.append((target, node, id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("spot_utils"):
                    out.append((alias.name, node, id(node) in top_level))
    return out


def role(module: str) -> int | None:
    """Floor of a module: the index of its role package, len(ROLES) for the top level, None for the package root."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    return ROLES.index(parts[1]) if parts[1] in ROLES else len(ROLES)


def test_role_packages_and_few_top_level_modules():
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(ROLES)
    top = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_MODULES, top


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_point_down_only(module):
    path = modules()[module]
    for target, node, _ in imports(path):
        if role(module) is None or role(target) is None:
            continue
        assert role(target) <= role(module), f"{module} (line {node.lineno}) imports {target}, a higher floor"


def test_no_import_cycle_function_level_imports_included():
    graph = {m: {t for t, _, _ in imports(p) if t in modules() and t != m} for m, p in modules().items()}
    graph["spot_utils"] = set()  # the package root imports its public names; modules import it only for torch checks
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("module", sorted(modules()))
def test_function_level_imports_defer_a_heavy_dependency_and_say_so(module):
    path = modules()[module]
    lines = path.read_text().splitlines()
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
            line = " ".join(lines[node.lineno - 1:node.end_lineno])
            assert not (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("spot_utils"))), \
                f"{module}:{node.lineno} imports a spot_utils module inside a function: {line.strip()}"
            assert "# deferred:" in line, f"{module}:{node.lineno} defers an import without saying why: {line.strip()}"


def test_the_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above would fail on a package that has the faults they look for."""
    fake = tmp_path / "spot_utils"
    for pkg in ("base", "report"):
        (fake / pkg).mkdir(parents=True)
        (fake / pkg / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "base" / "a.py").write_text("from ..report.b import x\n")
    (fake / "report" / "b.py").write_text("def f():\n    from ..base import a\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    with pytest.raises(AssertionError, match="higher floor"):
        test_imports_point_down_only("spot_utils.base.a")
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycle_function_level_imports_included()
    with pytest.raises(AssertionError, match="inside a function"):
        test_function_level_imports_defer_a_heavy_dependency_and_say_so("spot_utils.report.b")


def test_readme_layout_names_every_module_in_its_package():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("`")[1]: line for line in layout.splitlines() if line.startswith("| `spot_utils/")}
    for path in sorted(PACKAGE.rglob("*.py")):
        folder = "spot_utils/*.py" if path.parent == PACKAGE else f"spot_utils/{path.parent.name}/"
        if path.name != "__init__.py" or path.parent == PACKAGE:
            assert f"`{path.name}`" in rows.get(folder, ""), f"README Layout: {path.relative_to(PACKAGE.parent)}"
