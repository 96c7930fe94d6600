"""The metric-name and mask-kind tables are the one home of their names; metrics rows carry their schema version."""
import re
from pathlib import Path

import pytest

from spot_utils.analysis import metric_names
from spot_utils.analysis.metric_names import METRIC_NAMES, register_derived_metric, register_metric_name
from spot_utils.analysis.rows import SCHEMA_VERSION, row, schema_version, to_frame, write_metrics
from spot_utils.base.io import read_json
from spot_utils.method.mask_kinds import MASK_KINDS, controls, kinds, readme_kinds, register_mask_kind

PACKAGE = Path(metric_names.__file__).resolve().parents[1]
USERS = ["analysis/matched.py", "analysis/paired_tests.py", "analysis/rows.py", "experiment/ablation_loop.py",
         "report/headline.py", "report/readme_block.py", "report/tables.py", "report/plots.py"]


def test_every_metric_constant_is_a_registered_name():
    constants = {v for k, v in vars(metric_names).items() if k.isupper() and isinstance(v, str)
                 and not k.startswith(("_", "P_HOLM", "P_WILCOXON"))}  # Holm and Wilcoxon: name families
    assert constants <= set(METRIC_NAMES)
    assert metric_names.holm_name("p_matched_excess") == metric_names.P_HOLM_MATCHED_EXCESS == "p_holm_matched_excess"


def test_producers_and_readers_name_metrics_by_their_constants():
    names = "|".join(re.escape(n) for n in METRIC_NAMES if n != "loss")  # "loss" is also a metric group's name
    for rel in USERS:
        text = (PACKAGE / rel).read_text()
        code = re.sub(r'"""[\s\S]*?"""', "", text)  # docstrings may name a metric in prose
        assert not re.findall(rf'(?<!\[)"(?:p_holm_|p_|mde_)?(?:{names})"(?!\])', code), rel  # not a key: s["x"]


def test_derived_metrics_and_names_are_refused_without_an_implementation_or_a_direction():
    with pytest.raises(ValueError, match="no implementation"):
        register_derived_metric("toy", derive=None, unit="x", direction="none")
    with pytest.raises(ValueError, match="direction"):
        register_metric_name("toy", unit="x", direction="up", produced_by="f", carried_by="rows")
    with pytest.raises(ValueError, match="already registered"):
        register_metric_name("code_rise", unit="x", direction="none", produced_by="f", carried_by="rows")
    assert "toy" not in METRIC_NAMES


def test_rows_carry_the_schema_version_and_older_rows_read_as_version_1(tmp_path):
    new = row(metric="loss", value=1.5)
    old = {k: v for k, v in new.items() if k != "schema_version"}  # a row of a report written before the field
    assert new["schema_version"] == SCHEMA_VERSION == 3 and schema_version(new) == 3 and schema_version(old) == 1
    write_metrics(tmp_path / "metrics.json", [new, old])
    back = read_json(tmp_path / "metrics.json")
    assert [schema_version(r) for r in back] == [3, 1] and back[0] == new
    df = to_frame(back)
    assert df.value.tolist() == [1.5, 1.5] and df.schema_version.tolist()[0] == 3
    with pytest.raises(KeyError, match="unknown metric fields"):
        to_frame([dict(old, colour="red")])


def test_the_mask_kind_table_holds_the_lists_the_readers_used():
    assert list(controls()) == ["random_uniform", "random", "magnitude"] == list(kinds(ablation="control"))
    assert readme_kinds() == ("spot", "authors_spot", "magnitude", "random", "random_uniform", "code_over_general",
                              "code_minus_general")
    assert set(kinds(headline=True)) == {"spot", "authors_spot", "code_over_general", "random_uniform"}
    assert kinds(k_param="authors_spot_k") == ("authors_spot",) and MASK_KINDS["authors_spot"].configuration == "paper"
    assert set(kinds(heavy=True)) == {"baseline", "spot", "authors_spot", "code_over_general", "random_uniform"}
    assert kinds(per_configuration=False) == ("code_over_general", "code_minus_general")
    for name in kinds(ablation="control") + kinds(ablation="from_spot") + kinds(ablation="stage03"):
        assert callable(MASK_KINDS[name].build), name
    with pytest.raises(ValueError, match="no implementation"):
        register_mask_kind("toy", build=None, stage="04_ablation", ablation="stage03")
    with pytest.raises(ValueError, match="ablation must be one of"):
        register_mask_kind("toy", build=len, stage="04_ablation", ablation="sometimes")
    assert "toy" not in MASK_KINDS
