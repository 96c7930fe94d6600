"""Bad arguments to the library functions get messages that name the problem, never a silent result."""
import pytest
import torch

from conftest import random_sequences
from spot_utils import aggregate, score, select_top_k


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, True, "4"])
def test_score_rejects_a_batch_size_that_is_not_a_positive_integer(llama, batch_size):
    model, _ = llama
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        score(model, random_sequences(2), batch_size=batch_size)


def test_score_rejects_float_token_tensors(llama):
    model, _ = llama
    with pytest.raises(TypeError, match="sequence 1 holds torch.float32 values"):
        score(model, [torch.tensor([1, 2, 3]), torch.tensor([1.0, 2.7, 3.0])])


@pytest.mark.parametrize("bad, shown", [(10_000, "10000"), (-3, "-3")])
def test_token_ids_out_of_range_name_the_id_and_vocabulary(llama, bad, shown):
    model, tokenizer = llama
    vocab = model.get_input_embeddings().weight.shape[0]
    seq = torch.tensor([1, 2, bad, 4])
    with pytest.raises(ValueError, match=rf"rust: sequence 0 has token id {shown}, outside .* {vocab} ids"):
        score(model, [seq], name="rust")


def test_select_top_k_rejects_empty_scores_and_bad_k():
    scores = {"w": torch.arange(10.0)}
    with pytest.raises(ValueError, match="no scores"):
        select_top_k({}, 1.0)
    for k in ("1", True, None):
        with pytest.raises(TypeError, match="k_percent must be a number"):
            select_top_k(scores, k)
    with pytest.raises(ValueError, match=r"selects no entry: 5% of 10 entries"):
        select_top_k(scores, 5.0)
    with pytest.raises(ValueError, match=r"selects no entry in any tensor \(the largest holds 10 entries\)"):
        select_top_k(scores, 5.0, "per_tensor")
    assert int(select_top_k(scores, 10.0)["w"].sum()) == 1


def test_aggregate_names_language_and_tensor_of_a_shape_mismatch():
    a = {"w": torch.ones(2, 3), "b": torch.ones(3)}
    b = {"w": torch.ones(3, 2), "b": torch.ones(3)}
    with pytest.raises(ValueError, match=r"scores of 'w' of 'rust' has shape \(3, 2\), of 'go' \(2, 3\)"):
        aggregate({"go": a, "rust": b})
