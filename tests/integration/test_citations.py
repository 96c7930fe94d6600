"""The repository stands alone: modules, notebooks, params files, benchmarks, tests and docs cite only documents the
repository holds (Markdown links and *.md paths that exist, "docs/METHOD.md, <heading>" with a real heading), never
an outside reference document or a project issue number."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCANNED = ("spot_utils/**/*.py", "notebooks/*.ipynb", "params/*.yaml", "benchmarks/**/*.py", "benchmarks/**/*.md",
           "benchmarks/**/*.txt", "tests/**/*.py", "README.md", "docs/**/*.md", "Makefile", "pyproject.toml",
           "environment.yml", ".ci/*")
# documents that are not in the repository, section numbers of an outside document, project issue numbers
FORBIDDEN = {
    "an outside spec": re.compile(r"\bSPEC\b|\b[Pp]roject spec\b"),
    "an outside data or notebook guide": re.compile(r"\b(DATA|NOTEBOOKS)\.md\b"),
    "a numbered section (§) of an outside document": re.compile(r"§\s*\d"),
    "a project issue number": re.compile(r"\bissues?\s*#?\d+\b|(?<![\w&/#\"':])#\d+\b(?![\w-])", re.I),
}
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
MD_PATH = re.compile(r"(?<![\w/.:-])([\w./-]*[\w-]\.md)\b")
METHOD_SECTION = re.compile(r"docs/METHOD\.md,\s+([^\n]+)")
HEADING = re.compile(r"^#+\s+(.+?)\s*$", re.M)


def scanned_files() -> list[Path]:
    files = {p for pattern in SCANNED for p in REPO.glob(pattern) if p.is_file()}
    return sorted(files - {Path(__file__).resolve()})


def text_of(path: Path) -> str:
    """A file's text; for a notebook, the sources of all its cells (markdown and code)."""
    if path.suffix == ".ipynb":
        return "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    return path.read_text(errors="replace")


def headings(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no '#' comments of code blocks
    return HEADING.findall(text)


def _exists(target: str, citing: Path) -> bool:
    return any((base / target).exists() for base in (citing.parent, REPO))


def bad_citations(text: str, citing: Path) -> list[str]:
    """Every citation in `text` (from the file `citing`) of a document or section the repository does not hold."""
    bad = [f"{what}: {m.group(0)!r}" for what, pattern in FORBIDDEN.items() for m in pattern.finditer(text)]
    for m in LINK.finditer(text) if citing.suffix in (".md", ".ipynb") else ():  # in code, x[i](y) is a call
        target = m.group(1).split("#")[0]
        if target and not re.match(r"[a-z][\w+.-]*:", target) and not _exists(target, citing):
            bad.append(f"link to a missing file: {m.group(0)!r}")
    bad += [f"missing document: {m.group(1)!r}" for m in MD_PATH.finditer(text) if not _exists(m.group(1), citing)]
    method = REPO / "docs" / "METHOD.md"
    sections = headings(method) if method.is_file() else []
    bad += [f"no such section of docs/METHOD.md: {m.group(0)!r}" for m in METHOD_SECTION.finditer(text)
            if not any(m.group(1).startswith(h) for h in sections)]
    return bad


def test_the_checker_catches_planted_bad_citations():
    citing = REPO / "spot_utils" / "planted.py"
    for planted in ("see SPEC §4", "as the project spec says", "offline packages (DATA.md)", "NOTEBOOKS.md",
                    "everything in §3–§5", "# --- issue 5: stage 04 ---", "fixed in (#6)", "Issue 12", "issues #3",
                    "[the guide](docs/GUIDE.md)", "see docs/NOT_HERE.md", "(docs/METHOD.md, No Such Section)"):
        assert bad_citations(planted, citing), planted
    for fine in ("(docs/METHOD.md, Selection)", "[scaling](docs/SCALING.md)", "README.md", "#0072B2 colour",
                 "a model spec", "SPECIAL", "[site](https://example.org/x.md)", "x = 5  # 5 items"):
        assert not bad_citations(fine, citing), fine
    assert not bad_citations("[method](METHOD.md#selection)", REPO / "docs" / "SCALING.md")


def test_method_has_the_sections_code_cites():
    names = headings(REPO / "docs" / "METHOD.md")
    for section in ("Scoring", "Aggregation", "Selection", "Tie order", "Regions", "Contrastive regions", "Ablation",
                    "Controls", "Metrics", "Statistical tests", "Holm families", "Overlap statistics",
                    "metrics.json rows", "Stages"):
        assert section in names, section


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_cites_only_documents_the_repository_holds(path):
    assert not bad_citations(text_of(path), path), f"{path.relative_to(REPO)}: " + "; ".join(
        bad_citations(text_of(path), path))
