"""The torch versions this package runs on, checked when `spot_utils` is imported.

The lower bound is a torch the whole fast test suite (distributed tests included) ran and passed on: 2.13.0, the
version installed here. `python tools/torch_range.py <version>` installs another into a temporary venv, runs the
suite and records the result in benchmarks/results/torch_range_<version>.json. The one older candidate tried,
2.8.0 (the first release whose FSDP2 modules have `set_gradient_divide_factor` and
`set_force_sum_reduction_for_comms`, which experiment/distributed.py calls; 2.7.1's wheel lacks them), failed:
sharded scoring's checkpoint refused to resume there (test_fsdp_over_two_gloo_processes_equals_one_process, run alone
in that venv; torch_range_2.8.0.json records the suite run, stopped after 28 min with 2 failures). Versions between
were not tried.
pyproject.toml and environment.yml declare the same range (tests/integration/test_repository.py checks that).
"""
from __future__ import annotations

import re

TORCH_RANGE = ("2.13", "2.16")  # >= first, < second


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
