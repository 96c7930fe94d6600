"""The run plan: stage 04's upper bound counted by hand for a small grid, hours = calls x cost, and the disk need."""
import pytest

from spot_utils.experiment import plan
from spot_utils.experiment.params import DEFAULTS


def small_params(**over):
    given = dict(run_name="x", languages=["go", "rust"], k_grid=[0.1, 1.0, 5.0], configurations=["paper", "global"],
                 random_seeds=[0, 1, 2], n_uniform_seeds=2, ablation_modes=["zero", "mean"], outlier_counts=[1, 10],
                 random_extension_k=[10.0], generation=True, generation_items=None, mbpp_items=200)
    return {**DEFAULTS, **given, **over}


def test_stage04_upper_bound_by_hand():
    """Per configuration (3 k, 2 headline k): spot 3; random_uniform 2 headline x 2 seeds + 1 other k x 1 seed = 5;
    random 2 x 3 seeds = 6; magnitude 2; spot_norms 2; the mean mode 1; outliers 2; extension 1. Contrastive regions
    2 headline k x 2 kinds, once for both configurations. authors_spot at its 4 k, paper only. random_uniform's
    second seed at the 3 + 1 - 2 = 2 curve k values that are not headline ones, per configuration."""
    counts = plan.stage04_entries(small_params())
    assert counts == dict(baseline=1, spot=6, random_uniform=10, random=12, magnitude=4, spot_norms=4, other_modes=2,
                          contrastive=4, authors_spot=4, top_entries=4, extension=2, bracket_seeds=4)
    assert plan.stage04_entries(small_params(configurations=["global"], authors_spot_k=[1.0]))["authors_spot"] == 0
    # baseline, spot + 2 seeds per configuration, code_over_general, authors_spot at k_detail (paper)
    assert plan.generation_calls(small_params()) == 1 + 2 * (1 + 2) + 1 + 1
    assert plan.generation_calls(small_params(heavy_seeds=1)) == 1 + 2 * (1 + 1) + 1 + 1
    assert plan.generation_calls(small_params(authors_spot_k=[0.5])) == 1 + 2 * (1 + 2) + 1
    assert plan.generation_calls(small_params(generation=False)) == 0


def test_run_plan_hours_and_disk():
    costs = dict(score_sequence_s=2.0, loss_sequence_s=0.5, generation_token_s=0.01)
    p = small_params(n_score_sequences=10, n_eval_sequences=4, score_dtype="bfloat16")
    out = plan.run_plan(p, costs, scored_entries=1_000_000_000, n_eval_subsets=3, new_tokens_per_problem=100)
    stages = {s["stage"]: s for s in out["stages"]}
    assert stages["01_scoring"]["calls"] == 2 and stages["01_scoring"]["per_call_s"] == 20.0
    assert stages["04_ablation: loss"]["calls"] == 57 and stages["04_ablation: loss"]["per_call_s"] == 6.0
    assert stages["04_ablation: generation"]["per_call_s"] == pytest.approx((164 + 200) * 100 * 0.01)
    assert out["total_hours"] == pytest.approx((2 * 20 + 57 * 6 + 9 * 364) / 3600)
    assert out["score_file_gb"] == 2.0 and out["disk_gb"] == 2.0 * 2 * 3  # 3 files per language, 2 bytes per entry
    assert "27" not in plan.format_plan(out) and "6 score files x 2.00 GB = 12.0 GB" in plan.format_plan(out)
    with pytest.raises(KeyError, match="generation_token_s"):
        plan.run_plan(p, dict(score_sequence_s=1, loss_sequence_s=1), 1, 1)


def test_heavy_groups_go_to_the_first_heavy_seeds_of_a_seeded_control_only():
    from spot_utils.experiment.ablation_plan import plan_metrics
    from spot_utils.measure.metric_groups import METRIC_GROUPS
    heavy = {n for n, g in METRIC_GROUPS.items() if g.cost == "heavy"}
    p = small_params(random_seeds=[0, 1, 2], n_uniform_seeds=3, heavy_seeds=2, k_detail=1.0)
    at = dict(mask_kind="random_uniform", k_percent=1.0, mode="zero")
    assert heavy <= set(plan_metrics(dict(at, seed=1), p))
    assert not heavy & set(plan_metrics(dict(at, seed=2), p))
    assert heavy <= set(plan_metrics(dict(at, seed=2), dict(p, heavy_seeds=None)))
    assert heavy <= set(plan_metrics(dict(mask_kind="authors_spot", k_percent=1.0, mode="zero"), p))
    assert not heavy & set(plan_metrics(dict(mask_kind="authors_spot", k_percent=3.0, mode="zero"), p))
