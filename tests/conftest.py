import pytest
import torch

from spot_utils import load_model


@pytest.fixture(params=["llama", "qwen2", "gemma3"])
def tiny(request):
    """(model, tokenizer) of each tiny random architecture."""
    return load_model(f"random:{request.param}")


@pytest.fixture
def llama():
    return load_model("random:llama")


def random_sequences(n, vocab=256, lengths=(5, 17, 9, 30, 2, 12, 23), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (lengths[i % len(lengths)],), generator=gen) for i in range(n)]
