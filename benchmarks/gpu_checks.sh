#!/usr/bin/env bash
# The tests that run on a CUDA device (pytest marker `cuda`: tests/unit/test_cuda.py), run there once; the result, with
# the torch, CUDA and device it ran on, goes to benchmarks/results/cuda_tests_<device>.txt. Exits with pytest's status.
#   bash benchmarks/gpu_checks.sh                 # PYTHON=/path/to/python to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_checks: torch sees no CUDA device; nothing run, nothing written" >&2
    exit 1
fi
device=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")
slug=$(echo "$device" | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-\|-$//g')
out=benchmarks/results/cuda_tests_${slug}.txt
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT

{
    echo "# tests/unit/test_cuda.py on one CUDA device: bash benchmarks/gpu_checks.sh"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    "$PYTHON" -c "
import platform, torch, transformers
print('device:', torch.cuda.get_device_name(0), '| compute capability', '.'.join(map(str, torch.cuda.get_device_capability(0))))
print('torch:', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version())
print('transformers:', transformers.__version__, '| python', platform.python_version())"
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || echo unknown)"
    echo
} > "$tmp"
status=0
"$PYTHON" -m pytest -q -m cuda -rA -p no:cacheprovider tests/unit/test_cuda.py 2>&1 | tee -a "$tmp" || status=$?
mv "$tmp" "$out"
trap - EXIT
echo "gpu_checks: wrote $out (pytest exit status $status)"
exit "$status"
