"""Logic the stage notebooks call instead of holding it: the checks table, stage 03's mask bookkeeping and stage 04's
damage-matched completeness check."""
import numpy as np
import pandas as pd
import pytest
import torch

from spot_utils import load_masks, mask_count
from spot_utils.experiment.selection_stage import SelectionOutputs
from spot_utils.experiment.stage_checks import checks_table, matched_rows_complete
from spot_utils.method.mask_kinds import REFERENCE_CONTROL, controls


def test_checks_table_lists_every_check_and_names_the_failed_ones():
    table = checks_table([("a", True), ("b", np.bool_(True))])
    assert table.to_dict("records") == [dict(check="a", passed=True), dict(check="b", passed=True)]
    with pytest.raises(AssertionError, match=r"2 of 3 checks failed: b; c"):
        checks_table([("a", True), ("b", False), ("c", np.bool_(False))])
    with pytest.raises(TypeError, match=r"check 'series' gave Series"):
        checks_table([("series", pd.Series([True, False]))])  # would read as ambiguous, or as passed
    with pytest.raises(TypeError, match=r"check 'count' gave int 1"):
        checks_table([("count", 1)])


def masks(shapes, ones):
    out = {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()}
    for n, i in ones:
        out[n].view(-1)[i] = True
    return out


def test_selection_outputs_write_each_mask_and_record_what_the_stage_tables_need(tmp_path, monkeypatch):
    import spot_utils.base.run_files as run_files
    monkeypatch.setattr(run_files, "RUNS_DIR", tmp_path)
    shapes = {"model.layers.0.mlp.up_proj.weight": (4, 3), "model.layers.1.self_attn.q_proj.weight": (3, 3),
              "model.layers.0.input_layernorm.weight": (3,)}
    names = list(shapes)
    spot = masks(shapes, [(names[0], 0), (names[0], 5), (names[1], 2)])
    paper = masks(shapes, [(names[0], 1), (names[2], 0)])
    lang = masks(shapes, [(names[1], 0)])
    out = SelectionOutputs({"run_name": "r"}, {"model": "m"})
    assert out.keep("spot", 1.0, spot) is spot
    out.keep("spot", 1.0, paper, "paper")
    out.keep("lang_go", 1.0, lang)
    out.keep("spot", 5.0, lang)
    reloaded, manifest = load_masks(run_files.mask_path({"run_name": "r"}, "spot", 1.0, "paper"))
    assert all(torch.equal(reloaded[n], paper[n]) for n in shapes)
    assert manifest["model"] == "m" and manifest["kind"] == "spot" and manifest["granularity"] == "per_tensor"
    summary, sizes = out.tables()
    assert summary[["k_percent", "configuration", "total", "in_vectors"]].values.tolist() == [
        [1.0, "global", 3, 0], [1.0, "paper", 2, 1], [5.0, "global", 1, 0]]
    # sizes: global masks only (the paper spot is summarised, not sized), kind x k
    assert sorted(sizes.index) == ["lang_go", "spot"] and list(sizes.columns) == [1.0, 5.0]
    assert sizes.loc["spot"].tolist() == [3, 1] and sizes.loc["lang_go", 1.0] == 1 and np.isnan(sizes.loc["lang_go", 5.0])
    mapped = pd.DataFrame(out.layers_modules)  # the spot is a mapped kind, a language's mask is not
    assert set(mapped.kind) == {"spot"} and mapped.groupby("k_percent").selected.sum().to_dict() == {
        1.0: mask_count(spot), 5.0: mask_count(lang)}


def test_matched_rows_complete_wants_every_compared_kind_in_every_configuration_and_reference():
    compared = ["spot", *(k for k in controls() if k != REFERENCE_CONTROL)]
    rows = pd.DataFrame([dict(metric="matched_excess", configuration=c, reference=r, mask_kind=k)
                         for c in ("paper", "global") for r in ("english", "english_modern") for k in compared])
    assert matched_rows_complete(rows, ["paper", "global"], ["english", "english_modern"])
    for dropped in range(len(rows)):  # any one missing row is found
        assert not matched_rows_complete(rows.drop(index=dropped), ["paper", "global"], ["english", "english_modern"])
    other_metric = rows.assign(metric=np.where(rows.index == 0, "code_rise", rows.metric))
    assert not matched_rows_complete(other_metric, ["paper", "global"], ["english", "english_modern"])
