"""Repository conventions: notebooks stored without outputs, conda and pip dependency lists agree."""
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_notebooks_are_stored_without_outputs():
    for path in (ROOT / "notebooks").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"]} | {_name(r) for r in project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip_section = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section |= {_name(r) for r in dep["pip"] if not r.startswith("-")}
        else:
            conda.add(_name(dep))
    env_names = (conda | pip_section) - {"python", "pip", "pytorch-cuda", "pytorch", "cuda-version"}
    env_names = {"torch" if n == "pytorch" else n for n in env_names} | ({"torch"} if "pytorch" in conda else set())
    assert env_names == pip_names


def _git(*args):
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True).stdout


def test_only_stage_notebooks_are_stripped_and_local_runs_ignored():
    if not (ROOT / ".git").exists():
        pytest.skip("an exported tree without git")
    attrs = _git("check-attr", "filter", "notebooks/01_scoring.ipynb", "reports/default/01_scoring.ipynb")
    assert "notebooks/01_scoring.ipynb: filter: nbstripout" in attrs
    assert "reports/default/01_scoring.ipynb: filter: unspecified" in attrs  # executed notebooks keep outputs
    ignored = _git("check-ignore", "reports/tiny/metrics.json", "reports/default/metrics.json", "reports/index.html")
    assert ignored.split() == ["reports/tiny/metrics.json"]
