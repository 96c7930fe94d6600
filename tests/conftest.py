from contextlib import contextmanager

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


def write_stage03_masks(params, scores, model):
    """The masks stage 04 reads, selected from `scores` as stage 03 would: each configuration's spot and the
    contrastive regions (top-k and top-k/2 of the 2-D matrices) at every k of the grid, and authors_spot from the
    model's weights at its own k values (paper configuration)."""
    from spot_utils import authors_spot, save_masks, select_top_k
    from spot_utils.base import run_files as runs
    from spot_utils.method.scoring import scoped_parameters
    from spot_utils.method.selection import configuration_spot
    if "paper" in params["configurations"]:
        for k in params["authors_spot_k"]:
            save_masks(runs.mask_path(params, "authors_spot", k, "paper"),
                       authors_spot(scores, scoped_parameters(model), k), {})
    for k in params["k_grid"]:
        for configuration in params["configurations"]:
            save_masks(runs.mask_path(params, "spot", k, configuration), configuration_spot(scores, k, configuration), {})
        matrices = {n: s for n, s in scores.items() if s.ndim == 2}
        save_masks(runs.mask_path(params, "code_over_general", k), select_top_k(matrices, k), {})
        save_masks(runs.mask_path(params, "code_minus_general", k), select_top_k(matrices, k / 2), {})


@contextmanager
def killed_at_batch(model, n: int = 2):
    """Stop what runs inside at the model's n-th forward call, as a kill would (KeyboardInterrupt, expected)."""
    calls = {"n": 0}

    def stop(module, args):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
    handle = model.model.register_forward_pre_hook(stop)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        handle.remove()
