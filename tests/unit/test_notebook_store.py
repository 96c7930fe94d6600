"""The Jupyter pre-save hook saves a notebook git filters in the form git stores (so a JupyterLab save leaves `git
status` clean: git reports a file of another size as modified without running the filter), and leaves every other
notebook as it is; --install enables the server extension that registers it in an environment."""
import json
from pathlib import Path
import subprocess
import sys

import pytest

from spot_utils.base import notebook_store

CLEAN = f'"{sys.executable}" -m nbstripout --keep-id --extra-keys "metadata.language_info metadata.widgets"'


def _notebook() -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": 7, "id": "a1", "metadata": {},
                       "outputs": [{"output_type": "stream", "name": "stdout", "text": "x\n"}], "source": ["print('x')"]}],
            "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                         "language_info": {"name": "python", "version": "3.11.7"}},
            "nbformat": 4, "nbformat_minor": 5}


class _Manager:
    def __init__(self, root: Path):
        self.root = root

    def _get_os_path(self, path: str) -> str:
        return str(self.root / path)


@pytest.fixture
def clone(tmp_path):
    git = ["git", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(git + ["config", "filter.nbstripout.clean", CLEAN], check=True)
    (tmp_path / ".gitattributes").write_text("notebooks/*.ipynb filter=nbstripout\n")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "reports").mkdir()
    return tmp_path


def test_a_filtered_notebook_is_saved_as_git_stores_it(clone):
    model = {"type": "notebook", "content": _notebook()}
    notebook_store.strip_on_save(model, "notebooks/01_x.ipynb", _Manager(clone))
    cell = model["content"]["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and cell["id"] == "a1"
    assert model["content"]["metadata"] == {"kernelspec": _notebook()["metadata"]["kernelspec"]}
    path = clone / "notebooks" / "01_x.ipynb"  # what git stores of the hook's result is that result
    path.write_text(json.dumps(model["content"], indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    stored = subprocess.run(["git", "-C", str(clone), "hash-object", "-w", "--path", "notebooks/01_x.ipynb",
                             str(path)], capture_output=True, text=True, check=True).stdout.strip()
    blob = subprocess.run(["git", "-C", str(clone), "cat-file", "-p", stored], capture_output=True, text=True,
                          check=True).stdout
    assert blob == path.read_text()


def test_other_notebooks_and_files_are_saved_as_they_are(clone, tmp_path_factory):
    for where, path in ((clone, "reports/run/01_x.ipynb"), (tmp_path_factory.mktemp("no_git"), "01_x.ipynb")):
        model = {"type": "notebook", "content": _notebook()}
        notebook_store.strip_on_save(model, path, _Manager(where))
        assert model["content"] == _notebook(), where
    text = {"type": "file", "format": "text", "content": "x"}
    notebook_store.strip_on_save(text, "notebooks/notes.txt", _Manager(clone))
    assert text["content"] == "x"


def test_install_enables_the_server_extension_that_registers_the_hook(tmp_path):
    target = notebook_store.install(tmp_path)
    assert target == tmp_path / "etc" / "jupyter" / "jupyter_server_config.d" / "spot_utils_notebooks.json"
    (module, enabled), = json.loads(target.read_text())["ServerApp"]["jpserver_extensions"].items()
    assert enabled and __import__(module, fromlist=["x"]) is notebook_store
    assert notebook_store._jupyter_server_extension_points() == [{"module": module}]
    hooks = []

    class _App:
        contents_manager = type("CM", (), {"register_pre_save_hook": lambda self, hook: hooks.append(hook)})()
        log = type("Log", (), {"info": lambda self, message: None})()

    notebook_store._load_jupyter_server_extension(_App())
    assert hooks == [notebook_store.strip_on_save]
