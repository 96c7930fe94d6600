import pytest
import torch

from spot_utils import select_top_k
from spot_utils.method.scoring import scoped_parameters
from spot_utils.method.structure import distribution, param_location, profile, summary


@pytest.mark.parametrize("name,want", [
    ("model.layers.3.self_attn.q_proj.weight", (3, "q")),
    ("model.layers.0.self_attn.k_proj.bias", (0, "k")),  # qwen2 biases belong to their projection
    ("model.layers.12.mlp.down_proj.weight", (12, "down")),
    ("model.layers.5.self_attn.q_norm.weight", (5, "norm")),  # gemma3 q/k norms are norms
    ("model.layers.7.pre_feedforward_layernorm.weight", (7, "norm")),
    ("model.embed_tokens.weight", (None, "other")),
])
def test_param_location(name, want):
    assert param_location(name) == want


def test_every_scoped_tensor_of_every_tiny_architecture_gets_a_layer_and_known_module(tiny):
    model, _ = tiny
    for name in scoped_parameters(model):
        layer, module = param_location(name)
        assert layer is not None and module != "other", name


def hand_masks():
    return {"model.layers.0.self_attn.q_proj.weight": torch.tensor([[1, 1], [0, 0]], dtype=torch.bool),
            "model.layers.0.input_layernorm.weight": torch.tensor([1, 0], dtype=torch.bool),
            "model.layers.1.self_attn.q_proj.weight": torch.zeros(2, 2, dtype=torch.bool),
            "model.layers.1.input_layernorm.weight": torch.tensor([0, 0], dtype=torch.bool)}


def test_distribution_and_summary_on_a_hand_case():
    df = distribution(hand_masks())
    assert df.selected.tolist() == [2, 1, 0, 0] and df["size"].tolist() == [4, 2, 4, 2]
    assert df.share.tolist() == [0.5, 0.5, 0.0, 0.0]
    s = summary(hand_masks())
    assert s == dict(total=3, in_vectors=1, vector_share=pytest.approx(1 / 3), empty_tensors=2, tensors=4)


def test_profiles_normalise_by_size():
    masks = hand_masks()  # 3 of 12 entries selected: overall share 0.25
    by_module = profile({"x": masks}, "module").set_index("group")
    assert by_module.loc["q", "share"] == pytest.approx(2 / 8) and by_module.loc["norm", "share"] == pytest.approx(1 / 4)
    by_layer = profile({"x": masks}, "layer").set_index("group")
    assert by_layer.loc[0, "share"] == pytest.approx(0.5) and by_layer.loc[0, "enrichment"] == pytest.approx(2.0)
    assert by_layer.loc[1, "selected"] == 0
    depth = profile({"x": masks, "y": masks}, "depth", bins=2)
    assert set(depth.label) == {"x", "y"} and sorted(depth[depth.label == "x"].group) == [0.0, 0.5]
    with pytest.raises(ValueError, match="unknown profile"):
        profile({"x": masks}, "head")


def test_depth_profile_lines_up_models_of_different_depth():
    def model_masks(n_layers, hot):
        return {f"model.layers.{i}.mlp.up_proj.weight": torch.full((4, 4), i == hot, dtype=torch.bool)
                for i in range(n_layers)}
    df = profile({"deep": model_masks(30, 29), "shallow": model_masks(18, 17)}, "depth", bins=5)
    last = df[df.group == 0.8].set_index("label")
    assert last.loc["deep", "selected"] == 16 and last.loc["shallow", "selected"] == 16
    assert (df[df.group < 0.8].selected == 0).all()
    for label, g in df.groupby("label"):  # every entry lands in exactly one bin
        assert g["size"].sum() == 16 * (30 if label == "deep" else 18)


def test_global_spot_of_a_tiny_model_has_a_profile(llama):
    model, _ = llama
    weights = {n: p.detach().abs() for n, p in scoped_parameters(model).items()}
    spot = select_top_k(weights, 5)
    df = profile({"spot": spot}, "module")
    assert df.selected.sum() == sum(int(m.sum()) for m in spot.values())
    weighted = (df.enrichment * df["size"]).sum() / df["size"].sum()
    assert weighted == pytest.approx(1.0)
