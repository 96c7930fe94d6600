"""Which random_uniform k values get all their seeds: the curve points that bracket each compared point's general
damage (ablation_loop.bracketing_ks), against a naive search; authors_spot's own k values in the plan."""
import numpy as np
import pytest

from spot_utils.experiment.ablation_loop import bracketing_ks
from spot_utils.experiment.ablation_plan import own_k_entries
from spot_utils.experiment.params import DEFAULTS


def point(key, x, destroyed=False):
    return dict(key=key, x=x, destroyed=destroyed)


def naive(points, curve):
    kept = [c for c in curve if not c["destroyed"]]
    out = set()
    for p in points:
        if p["destroyed"]:
            continue
        below = [c for c in kept if c["x"] <= p["x"]]
        above = [c for c in kept if c["x"] >= p["x"]]
        if below:
            out.add(max(below, key=lambda c: c["x"])["key"])
        if above:
            out.add(min(above, key=lambda c: c["x"])["key"])
    return out


def test_brackets_by_hand():
    curve = [point(0.1, 0.01), point(1.0, 0.1), point(5.0, 0.5), point(10.0, 2.0, destroyed=True)]
    assert bracketing_ks([point("a", 0.05)], curve) == {0.1, 1.0}
    assert bracketing_ks([point("a", 0.001)], curve) == {0.1}  # the origin brackets it from below
    assert bracketing_ks([point("a", 0.9)], curve) == {5.0}  # beyond the reach: the last kept point only
    assert bracketing_ks([point("a", 0.1)], curve) == {1.0}  # on a curve point: that point from both sides
    assert bracketing_ks([point("a", 0.3, destroyed=True)], curve) == set()
    collapsed = dict(point("a", 0.05), status="code_collapse")  # not compared, and not a curve point either
    assert bracketing_ks([collapsed], curve) == set()
    assert bracketing_ks([point("b", 0.05)], [dict(c, status="code_collapse") if c["key"] == 1.0 else c
                                               for c in curve]) == {0.1, 5.0}


@pytest.mark.parametrize("seed", range(20))
def test_brackets_equal_a_naive_search(seed):
    rng = np.random.default_rng(seed)
    curve = [point(k, float(x), bool(d)) for k, x, d in zip(range(8), rng.exponential(1, 8), rng.random(8) < 0.2)]
    points = [point(f"p{i}", float(x), bool(d)) for i, (x, d) in enumerate(zip(rng.exponential(1, 5),
                                                                                  rng.random(5) < 0.2))]
    assert bracketing_ks(points, curve) == naive(points, curve)


class _Model:
    def __init__(self, shapes):
        import torch
        self.shapes = shapes
        self.params = {n: torch.nn.Parameter(torch.zeros(s)) for n, s in shapes.items()}

    def named_parameters(self):
        return iter(self.params.items())


def test_authors_spot_is_planned_at_its_own_k_in_the_paper_configuration_only(tmp_path, monkeypatch):
    import torch
    import spot_utils.base.run_files as run_files
    import spot_utils.experiment.ablation_plan as plan_module
    from spot_utils import authors_spot
    from spot_utils.method.masks import save_masks
    shapes = {"model.layers.0.mlp.down_proj.weight": (20, 10), "model.layers.0.input_layernorm.weight": (20,)}
    monkeypatch.setattr(plan_module, "scoped_parameters", lambda model: model.params)
    monkeypatch.setattr(run_files, "RUNS_DIR", tmp_path)
    params = dict(DEFAULTS, run_name="x", authors_spot_k=[0.1, 1.0, 5.0])
    g = torch.Generator().manual_seed(0)
    A = {n: torch.rand(s, generator=g) for n, s in shapes.items()}
    weights = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    for k in (1.0, 5.0):  # what stage 03 writes
        save_masks(run_files.mask_path(params, "authors_spot", k, "paper"), authors_spot(A, weights, k), {})
    got = [(lab["configuration"], lab["mask_kind"], lab["k_percent"], m) for lab, m in
           own_k_entries(params, _Model(shapes), "paper")]
    # 0.1% of 200 entries rounds down to none in every tensor: no mask there
    assert [g[:3] for g in got] == [("paper", "authors_spot", 1.0), ("paper", "authors_spot", 5.0)]
    want = authors_spot(A, weights, 5.0)
    assert all(torch.equal(got[1][3][n], want[n]) for n in shapes)
    assert list(own_k_entries(params, _Model(shapes), "global")) == []
