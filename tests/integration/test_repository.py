"""Repository conventions: notebooks stored without outputs; pyproject.toml and environment.yml list the same
packages and the same torch range, the one `import spot_utils` enforces."""
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from spot_utils.base.versions import TORCH_RANGE, check_torch, torch_requirement

ROOT = Path(__file__).resolve().parents[2]
CONDA_ONLY = {"python", "pip", "pytorch-gpu", "cuda-version"}  # conda's own packages and the CUDA build selectors


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _specifier(requirement: str) -> str:
    return re.sub(r"\s", "", requirement)[len(_name(requirement)):]


def _pyproject() -> dict[str, str]:
    """{package name: requirement} of the dependencies and the dev extra."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {_name(r): r for r in project["dependencies"] + project["optional-dependencies"]["dev"]}


def _environment() -> tuple[list[str], dict[str, str]]:
    """(channels, {package name: requirement}) of environment.yml; conda's `pytorch` is pip's `torch`."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = {}
    for dep in env["dependencies"]:
        for r in dep["pip"] if isinstance(dep, dict) else [dep]:
            if not r.startswith("-"):
                name = _name(r)
                assert name not in deps, f"environment.yml lists {name} twice"
                deps[name] = r
    if "pytorch" in deps:
        deps["torch"] = "torch" + _specifier(deps.pop("pytorch"))
    return env["channels"], deps


def _stored(path: Path) -> str:
    """A file as git stores it (the index, what the next commit holds), not the working copy an editor saved."""
    return subprocess.run(["git", "-C", str(ROOT), "show", f":{path.relative_to(ROOT).as_posix()}"], check=True,
                          capture_output=True, text=True).stdout


STORED_KERNEL = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}  # ipykernel's own


def _strip_keys() -> str:
    return re.search(r"^NB_EXTRA_KEYS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1)


def test_notebooks_are_stored_without_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(_stored(path))
        assert nb["metadata"] == {"kernelspec": STORED_KERNEL}, path.name
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


def test_the_git_filter_turns_a_saved_notebook_back_into_the_stored_one():
    """What a JupyterLab save adds (outputs, counts, the machine's language metadata, widget state, execution
    times) is what the Makefile's filter strips: the stored notebook comes back (its kernelspec is ipykernel's, the
    one a save writes, and papermill needs one)."""
    path = ROOT / "notebooks" / "04_ablation.ipynb"
    stored = _stored(path)
    saved = json.loads(stored)
    saved["metadata"] = {"kernelspec": STORED_KERNEL,
                         "language_info": {"name": "python", "version": "3.11.7", "file_extension": ".py"},
                         "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}}
    for cell in saved["cells"]:
        if cell["cell_type"] == "code":
            cell.update(execution_count=3, outputs=[{"output_type": "stream", "name": "stdout", "text": "x\n"}])
            cell["metadata"]["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    clean = subprocess.run([sys.executable, "-m", "nbstripout", "--keep-id", "--extra-keys", _strip_keys()],
                           input=json.dumps(saved, indent=1), capture_output=True, text=True, check=True).stdout
    assert json.loads(clean) == json.loads(stored)


def test_environment_yml_lists_the_same_packages_as_pyproject():
    pip_side = set(_pyproject())
    conda_side = set(_environment()[1]) - CONDA_ONLY
    assert not pip_side - conda_side, f"missing from environment.yml: {sorted(pip_side - conda_side)}"
    assert not conda_side - pip_side, f"missing from pyproject.toml: {sorted(conda_side - pip_side)}"


def test_environment_yml_uses_conda_forge_and_a_cuda_build_only():
    channels, deps = _environment()
    assert "pytorch" not in channels, "PyTorch's own conda channel stopped at torch 2.5; use conda-forge's pytorch"
    assert channels[0] == "conda-forge"
    assert "pytorch-cuda" not in deps, "pytorch-cuda belongs to the pytorch channel; conda-forge uses cuda-version"
    assert {"pytorch-gpu", "cuda-version"} <= set(deps)


def test_torch_range_is_the_same_everywhere():
    assert _specifier(_pyproject()["torch"]) == torch_requirement()
    assert _specifier(_environment()[1]["torch"]) == torch_requirement()


@pytest.mark.parametrize("version", ["2.13.0", "2.13.0+cpu", "2.14.1+cu130", "2.15.1"])
def test_torch_versions_in_range_pass(version):
    check_torch(version)


@pytest.mark.parametrize("version", ["2.12.1", "2.8.0", "2.5.1", "2.4.0+cu124", "1.13.1", "2.16.0", "2.16.0a0+git1234", "3.0.0"])
def test_torch_versions_out_of_range_are_named(version):
    with pytest.raises(ImportError) as error:
        check_torch(version)
    assert version in str(error.value) and torch_requirement() in str(error.value)


def test_default_is_the_installed_torch(monkeypatch):
    import torch
    monkeypatch.setattr(torch, "__version__", "2.5.1+cu124")
    with pytest.raises(ImportError, match=re.escape("the installed torch is 2.5.1+cu124")):
        check_torch()
    monkeypatch.setattr(torch, "__version__", f"{TORCH_RANGE[0]}.0")
    check_torch()


def test_import_spot_utils_checks_torch_first():
    """A too-old torch stops `import spot_utils` with the message, before transformers is imported."""
    code = ("import sys, torch; torch.__version__ = '2.4.1'\n"
            "try:\n    import spot_utils\nexcept ImportError as e:\n"
            "    print(e); print('transformers' in sys.modules)\nelse:\n    print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.splitlines()
    assert out[0].startswith(f"spot_utils needs torch{torch_requirement()}; the installed torch is 2.4.1.")
    assert out[1:] == ["False"]


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


def test_readme_states_the_default_runs_time_from_its_committed_manifest():
    from spot_utils.report.index_page import format_seconds
    seconds = json.loads((ROOT / "reports" / "default" / "manifest.json").read_text())["stage_seconds"]
    readme = (ROOT / "README.md").read_text()
    assert f"The committed default run took **{format_seconds(sum(seconds.values()))}**" in readme
    assert all(f"{stage[:2]} {round(s)} s" in readme for stage, s in seconds.items())
