import json
from pathlib import Path

import pytest
import yaml

from spot_utils.experiment.params import DEFAULTS, load_params, validate

ROOT = Path(__file__).resolve().parents[2]


def test_committed_params_files_are_valid():
    for path in (ROOT / "params").glob("*.yaml"):
        assert load_params(path)["run_name"] == path.stem


@pytest.mark.parametrize("bad,match", [
    ({"k_grid": [1.0, 100]}, r"k_grid"),
    ({"k_detail": 0}, r"k_detail"),
    ({"languages": ["go", "cobol"]}, r"languages"),
    ({"languages": ["julia"], "corpus_source": None}, r"julia has no offline source"),
    ({"learning_rate": 1e-3}, r"unknown key 'learning_rate'"),
])
def test_bad_params_fail_with_a_clear_message(bad, match):
    with pytest.raises(ValueError, match=match):
        validate(bad)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({"run_name": "x", "typo_key": 1}))
    with pytest.raises(ValueError, match=r"(?s)x.yaml.*typo_key"):
        load_params(path)


def test_notebook_parameter_cells_use_the_schema_defaults():
    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb_path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
        assert len(cells) == 1, nb_path.name
        namespace = {}
        exec("".join(cells[0]["source"]), namespace)
        given = {k: v for k, v in namespace.items() if not k.startswith("__")}
        if nb_path.stem == "06_explore":  # its other parameters choose a view, not a run
            given = {k: v for k, v in given.items() if k not in ("configuration", "mask_kind", "k_percent", "reference")}
        assert given, nb_path.name
        assert {k: DEFAULTS[k] for k in given} == given, nb_path.name
