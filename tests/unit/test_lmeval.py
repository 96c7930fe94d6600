import numpy as np
import pytest
import torch

from spot_utils import ablated, scoped_parameters, select_top_k
from spot_utils.measure.multiple_choice import MultipleChoice

ITEMS = [dict(query="Question: is the sky blue?\nAnswer:", choices=["yes", "no, it is green"], gold=0),
         dict(query="Q: 2+2=", choices=["4", "22", "four!"], gold=2)]


def hand_logliks(model, tok, query, choices):
    """Σ log p(continuation token | prefix) for ' ' + choice after the query, from the raw logits."""
    out = []
    for c in choices:
        ctx = tok(query, add_special_tokens=False).input_ids
        whole = tok(query + " " + c, add_special_tokens=False).input_ids
        ids = torch.tensor([whole])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
        out.append(sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole))))
    return np.array(out)


@pytest.fixture(scope="module")
def mc(tmp_path_factory):
    from spot_utils import load_model
    model, tok = load_model("random:llama")
    return model, tok, MultipleChoice(model, tok, {"hand": ITEMS}, tmp_path_factory.mktemp("tasks"), batch_size=2)


def test_accuracy_equals_the_hand_computation_from_the_logits(mc):
    model, tok, evaluator = mc
    scores = evaluator.item_scores()
    assert list(scores.item) == [0, 1] and set(scores.subset) == {"hand"}
    for item, row in zip(ITEMS, scores.itertuples()):
        ll = hand_logliks(model, tok, item["query"], item["choices"])
        assert np.allclose(row.logliks, ll, atol=1e-3)
        assert row.acc == float(np.argmax(ll) == item["gold"])
        norm = ll / np.array([len(c) for c in item["choices"]])  # lm-eval's acc_norm: per character of the choice
        assert row.acc_norm == float(np.argmax(norm) == item["gold"])


def test_ablation_in_place_shows_up_and_restores_exactly(mc):
    model, _, evaluator = mc
    before = evaluator.item_scores()
    masks = select_top_k({n: p.detach().abs() for n, p in scoped_parameters(model).items()}, 20.0)
    with ablated(model, masks):
        during = evaluator.item_scores()
    after = evaluator.item_scores()
    assert not np.allclose(np.concatenate(during.logliks.to_list()), np.concatenate(before.logliks.to_list()))
    assert np.concatenate(after.logliks.to_list()).tolist() == np.concatenate(before.logliks.to_list()).tolist()


def test_lm_eval_wraps_the_model_in_memory_on_its_device(mc, monkeypatch, tmp_path):
    """No reload and no copy: lm-eval's wrapper holds the same module on the model's device, and scoring leaves every
    parameter where it was (a model on a GPU is evaluated there)."""
    import transformers
    model, tok, evaluator = mc
    assert evaluator.lm.model is model and evaluator.lm.device == next(model.parameters()).device
    where = {n: (p.device, p.data_ptr()) for n, p in model.named_parameters()}
    evaluator.item_scores()
    assert {n: (p.device, p.data_ptr()) for n, p in model.named_parameters()} == where

    def no_loading(*a, **k):
        raise AssertionError("lm-eval loaded a model")
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_loading)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_loading)
    assert MultipleChoice(model, tok, {"hand": ITEMS}, tmp_path).lm.model is model
