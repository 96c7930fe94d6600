"""Paired pass@1 tests per mask (McNemar against the baseline, permutation against random_uniform pooled over its
seeds), the per-problem outcome file, and the rows of a mask that was not generated."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from spot_utils.analysis import stats
from spot_utils.analysis.generation import generation_test_rows, write_generation_outcomes
from spot_utils.experiment.ablation_loop import frame_rows
from spot_utils.measure.metric_groups import GENERATION_DESTROYED, generation_skip


def gen(passes, subset="humaneval"):
    return {"generation": pd.DataFrame(dict(subset=subset, item=range(len(passes)), task_id=[f"t{i}" for i in
                                                                                          range(len(passes))],
                                            **{"pass@1": np.asarray(passes, float)}, status="x", completion="c"))}


def labels(kind, seed=None, k=1.0):
    return dict(mask_kind=kind, configuration="global", k_percent=k, seed=seed, mode="zero", n_entries=10)


BASE = [1, 1, 1, 1, 1, 1, 0, 1, 0, 0]
SPOT = [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]
UNIFORM = ([1, 1, 1, 1, 0, 1, 0, 1, 0, 0], [1, 1, 1, 0, 1, 1, 0, 0, 0, 1])


def test_mcnemar_and_permutation_rows_against_naive_counts():
    results = [(labels("baseline"), gen(BASE)), (labels("spot"), gen(SPOT)),
               (labels("random_uniform", 0), gen(UNIFORM[0])), (labels("random_uniform", 1), gen(UNIFORM[1]))]
    rows = generation_test_rows(results, gen(BASE))
    mc = {(r["mask_kind"], r["seed"]): r for r in rows if r["metric"] == "p_mcnemar_pass@1"}
    assert mc["spot", None]["value"] == pytest.approx(0.125) and mc["spot", None]["n"] == 7  # 6 vs 1 discordant
    assert mc["random_uniform", 0]["value"] == 1.0 and mc["random_uniform", 0]["n"] == 1
    perm = [r for r in rows if r["metric"] == "p_permutation_pass@1"]
    assert len(perm) == 1 and perm[0]["mask_kind"] == "spot" and perm[0]["control_of"] == "random_uniform"
    pooled = (np.array(UNIFORM[0]) + np.array(UNIFORM[1])) / 2
    assert perm[0]["value"] == pytest.approx(stats.paired_permutation_p(SPOT, pooled))
    holm = [r for r in rows if r["metric"] == "p_holm_mcnemar_pass@1"]
    assert len(holm) == len(mc) and all(h["value"] >= m["value"] for h, m in zip(holm, mc.values()))


def test_a_destroyed_mask_is_not_generated_and_gets_a_row_without_value(tmp_path):
    vocab = 100
    high = pd.DataFrame(dict(subset=["go", "go", "rust", "english"], item=[0, 1, 0, 0],
                             loss=[math.log(vocab) + 1, math.log(vocab), math.log(vocab) + 0.5, 1.0]))
    problems = [dict(task_id="HumanEval/0"), dict(task_id="HumanEval/1")]
    skipped = generation_skip(high, ["go", "rust"], vocab, problems, [])
    assert skipped["status"].eq(GENERATION_DESTROYED).all() and skipped["pass@1"].isna().all()
    low = high.assign(loss=high["loss"] - 2)
    assert generation_skip(low, ["go", "rust"], vocab, problems, []) is None
    rows = frame_rows({"generation": skipped}, None, labels("spot"))
    assert [(r["metric"], r["value"], r["status"], r["n"]) for r in rows] == [("pass@1", None, GENERATION_DESTROYED, 2)]
    results = [(labels("baseline"), gen([1, 0])), (labels("spot"), {"generation": skipped})]
    assert generation_test_rows(results, gen([1, 0])) == []
    assert write_generation_outcomes(tmp_path / "generation.jsonl", results) == 4
    lines = [json.loads(x) for x in (tmp_path / "generation.jsonl").read_text().splitlines()]
    assert lines[2]["pass@1"] is None and lines[2]["mask_kind"] == "spot" and lines[0]["pass@1"] == 1.0
