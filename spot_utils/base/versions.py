"""The torch versions this package runs on, checked when `spot_utils` is imported.

The lower bound is the newest of what the code and its pins need: transformers 5.24 requires torch 2.6, which is
also the first release with the public FSDP2 API (`torch.distributed.fsdp.fully_shard`, docs/SCALING.md); the
scoring hooks (`register_post_accumulate_grad_hook`) need 2.2. pyproject.toml and environment.yml declare the same
range (tests/integration/test_repository.py checks that).
"""
from __future__ import annotations

import re

TORCH_RANGE = ("2.6", "2.16")  # >= first, < second


def torch_requirement() -> str:
    return f">={TORCH_RANGE[0]},<{TORCH_RANGE[1]}"


def _major_minor(version: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", version)
    if not match:
        raise ImportError(f"cannot read the torch version {version!r}; spot_utils needs torch{torch_requirement()}")
    return int(match[1]), int(match[2])


def check_torch(version: str | None = None) -> None:
    """Raise ImportError, naming both versions, unless `version` (default: the installed torch's) is in range."""
    if version is None:
        import torch  # deferred: torch is imported only after its version is known to fit
        version = str(torch.__version__)
    low, high = (_major_minor(v) for v in TORCH_RANGE)
    if not low <= _major_minor(version) < high:
        raise ImportError(f"spot_utils needs torch{torch_requirement()}; the installed torch is {version}. "
                          "Install one in that range: `pip install torch==2.13.0` (CPU build) or a CUDA build "
                          "as README's \"Scaling up\" shows.")
