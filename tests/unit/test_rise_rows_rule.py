"""paired_tests.rise_rows under the median destroyed rule, on hand-made item losses: a kept point's code subsets enter
capped at ln |V|, one whose code collapses with English intact says so and keeps its rises."""
import math

import numpy as np
import pandas as pd
import pytest

from spot_utils.analysis import paired_tests

V = 1000
LN = math.log(V)
CODE = [f"lang{i}" for i in range(12)]


def _items(means: dict) -> pd.DataFrame:
    offsets = np.array([-0.2, 0.0, 0.2])
    return pd.DataFrame([dict(subset=s, item=i, loss=m + o, accuracy=0.1) for s, m in means.items()
                         for i, o in enumerate(offsets)])


BASE = {s: 2.0 for s in CODE} | {"english": 3.0}


def _rows(ratios, english_ratio):
    ablated = {s: r * LN for s, r in zip(CODE, ratios)} | {"english": english_ratio * LN}
    rows = paired_tests.rise_rows(_items(ablated), _items(BASE), CODE, ["english"], dict(mask_kind="spot"), V,
                                  n_boot=50)
    return {(r["metric"], r["subset"]): r for r in rows}, ablated


def test_one_subset_past_ln_v_is_kept_and_enters_capped():
    ratios = [1.02, 0.60, 0.62, 0.64, 0.66, 0.67, 0.67, 0.67, 0.70, 0.72, 0.74, 0.76]
    rows, ablated = _rows(ratios, 0.5)
    code = rows[("code_rise", "code")]
    assert code["destroyed"] is False
    naive = np.mean([min(ablated[s], LN) / BASE[s] - 1 for s in CODE])
    assert code["value"] == pytest.approx(naive) and code["value"] < np.mean([ablated[s] / BASE[s] - 1 for s in CODE])
    gen = rows[("general_rise", "english")]
    assert gen["status"] is None and not gen["destroyed"] and gen["value"] == pytest.approx(0.5 * LN / 3 - 1)
    assert rows[("selectivity", "code/english")]["value"] == pytest.approx(naive / gen["value"])
    assert rows[("loss_over_uniform", "code")]["value"] == pytest.approx(0.67)


def test_code_collapsing_with_english_intact_keeps_its_rises_and_says_so():
    rows, ablated = _rows([1.0, 1.05, 1.1, 1.2, 1.3, 1.0, 1.4, 1.5, 1.1, 1.2, 0.5, 0.6], 0.7)
    code = rows[("code_rise", "code")]
    assert code["destroyed"] is True
    assert code["value"] == pytest.approx(np.mean([ablated[s] / BASE[s] - 1 for s in CODE]))  # as measured
    gen = rows[("general_rise", "english")]
    assert gen["status"] == "code_collapse" and gen["destroyed"] is False and gen["value"] is not None
    sel = rows[("selectivity", "code/english")]
    assert sel["value"] is None and sel["status"] == "code_collapse"
    assert rows[("loss_over_uniform", "english")]["value"] == pytest.approx(0.7)
    assert rows[("loss_over_uniform", "code")]["value"] == pytest.approx(1.1)  # the median of 12: the 6th and 7th, 1.1 and 1.1
    # English past ln |V| too: destroyed
    rows, _ = _rows([1.0] * 12, 1.01)
    assert rows[("general_rise", "english")]["status"] == "destroyed" and rows[("general_rise", "english")]["destroyed"]
