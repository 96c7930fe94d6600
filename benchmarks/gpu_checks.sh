#!/usr/bin/env bash
# The checks that need a GPU, in one call of at most 10 minutes, each result written with the torch version to
# benchmarks/results/ (<slug>: the device's name, e.g. h200):
#   1. the CUDA tests (pytest marker `cuda`: tests/unit/test_cuda.py)       -> cuda_tests_<slug>.txt
#   2. stages 01-05 on a random 4-layer Llama-3.1-8B-shaped model on the device, fixture corpora
#      (benchmarks/gpu_end_to_end.py)                                        -> end_to_end_8b-4layers_<slug>.json
#   3. FSDP scoring with one NCCL process against `score`, same shapes, 1 decoder layer
#      (benchmarks/fsdp_check.py)                                            -> fsdp_nccl_<slug>.json
# and a summary (exit status and seconds of each, versions) -> gpu_checks_<slug>.txt. Exits non-zero if any failed.
#
#   bash benchmarks/gpu_checks.sh                          # on the GPU machine, with its python3 (torch for CUDA)
#   bash benchmarks/gpu_checks.sh --setup pypi             # first a venv from PyPI: torch for CUDA as README's
#                                                          # "Scaling up" says (needs a network)
#   bash benchmarks/gpu_checks.sh --device cpu --small     # the same steps on a CPU, scaled down (gloo for FSDP)
#   bash benchmarks/gpu_checks.sh --dry-run                # print the plan, run nothing
# Options: --device cuda|cpu, --small (CPU-sized model), --only tests|pipeline|fsdp (repeatable), --copy-to DIR
# (also copy the written files there), --setup none|pypi, --dry-run. PYTHON=/path/to/python picks the interpreter;
# CUDA_WHEELS=cu126 picks PyTorch's wheel index for --setup pypi (default cu130; cu126 for a CUDA 12 driver).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
device=cuda small=0 setup=none dry=0 copy_to="" only=()
while (($#)); do
    case "$1" in
        --device) device=${2:?--device needs cuda or cpu}; shift 2 ;;
        --small) small=1; shift ;;
        --setup) setup=${2:?--setup needs none or pypi}; shift 2 ;;
        --only) only+=("${2:?--only needs tests, pipeline or fsdp}"); shift 2 ;;
        --copy-to) copy_to=${2:?--copy-to needs a folder}; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_checks: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_checks: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
case "$setup" in none|pypi) ;; *) echo "gpu_checks: --setup must be none or pypi, got '$setup'" >&2; exit 2 ;; esac
for step in "${only[@]}"; do
    case "$step" in tests|pipeline|fsdp) ;; *) echo "gpu_checks: --only takes tests, pipeline or fsdp, got '$step'" >&2; exit 2 ;; esac
done
((${#only[@]})) || only=(tests pipeline fsdp)
wanted() { [[ " ${only[*]} " == *" $1 "* ]]; }

PYTHON=${PYTHON:-python3}
if [[ $setup == pypi ]]; then
    venv=.venv-gpu
    plan_setup="$PYTHON -m venv $venv; pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${CUDA_WHEELS:-cu130}; pip install -e .[dev]"
    PYTHON=$venv/bin/python
fi
small_flag=()
((small)) && small_flag=(--small)
if [[ $device == cuda ]]; then dtype=bfloat16; else dtype=float32; fi

declare -A command=(
    [tests]="$PYTHON -m pytest -q -m cuda -rA -p no:cacheprovider tests/unit/test_cuda.py"
    [pipeline]="$PYTHON benchmarks/gpu_end_to_end.py --device $device --dtype $dtype ${small_flag[*]}"
    [fsdp]="$PYTHON benchmarks/fsdp_check.py --device $device --dtype $dtype --layers 1 ${small_flag[*]}"
)
declare -A limit=([tests]=120 [pipeline]=330 [fsdp]=120)  # seconds: 570 in all, under one 10-minute call
if ((dry)); then
    [[ $setup == pypi ]] && echo "setup: $plan_setup"
    for step in "${only[@]}"; do echo "$step (timeout ${limit[$step]} s): ${command[$step]}"; done
    exit 0
fi
if [[ $setup == pypi ]]; then
    [[ -x $PYTHON ]] || python3 -m venv "$venv"
    "$PYTHON" -m pip install -q torch==2.13.0 --index-url "https://download.pytorch.org/whl/${CUDA_WHEELS:-cu130}"
    "$PYTHON" -m pip install -q -e ".[dev]"
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [[ $device == cuda ]]; then
    if ! "$PYTHON" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
        echo "gpu_checks: torch sees no CUDA device; nothing run, nothing written (--device cpu runs on the CPU)" >&2
        exit 1
    fi
    name=$("$PYTHON" -c "import torch; print(torch.cuda.get_device_name(0))")
else
    name=cpu
fi
slug=$(echo "$name" | tr 'A-Z' 'a-z' | sed -e 's/^nvidia //' -e 's/[^a-z0-9]\+/-/g' -e 's/^-\|-$//g')
((small)) && slug=${slug}_small
results=benchmarks/results
command[pipeline]+=" --out $results/end_to_end_8b-4layers_${slug}.json"
command[fsdp]+=" --out $results/fsdp_$([[ $device == cuda ]] && echo nccl || echo gloo)_${slug}.json"
summary=$results/gpu_checks_${slug}.txt
tmp=$(mktemp "$summary.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
    echo "# bash benchmarks/gpu_checks.sh --device $device$( ((small)) && echo ' --small')"
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    "$PYTHON" -c "
import platform, torch, transformers
if torch.cuda.is_available():
    print('device:', torch.cuda.get_device_name(0), '| compute capability', '.'.join(map(str, torch.cuda.get_device_capability(0))))
print('torch:', torch.__version__, '| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version())
print('transformers:', transformers.__version__, '| python', platform.python_version())"
    echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1 || echo none)"
    echo
} > "$tmp"
failed=0
for step in tests pipeline fsdp; do
    wanted "$step" || continue
    echo "## $step: ${command[$step]}" | tee -a "$tmp"
    start=$SECONDS status=0
    if [[ $step == tests ]]; then
        timeout "${limit[$step]}" ${command[$step]} > "$results/cuda_tests_${slug}.txt.part" 2>&1 || status=$?
        cat "$tmp" "$results/cuda_tests_${slug}.txt.part" > "$results/cuda_tests_${slug}.txt"  # the header above
        rm -f "$results/cuda_tests_${slug}.txt.part"
        tail -n 15 "$results/cuda_tests_${slug}.txt" | tee -a "$tmp"
    else
        timeout "${limit[$step]}" ${command[$step]} 2>&1 | tee -a "$tmp" || status=${PIPESTATUS[0]}
    fi
    echo "$step: exit status $status in $((SECONDS - start)) s$( ((status == 124)) && echo " (stopped at its ${limit[$step]} s limit)")" | tee -a "$tmp"
    echo >> "$tmp"
    ((status == 0)) || failed=1
done
mv "$tmp" "$summary"
trap - EXIT
written=("$summary")
for f in "$results/cuda_tests_${slug}.txt" "$results/end_to_end_8b-4layers_${slug}.json" "$results"/fsdp_*_"${slug}".json; do
    [[ -f $f ]] && written+=("$f")
done
if [[ -n $copy_to ]]; then
    mkdir -p "$copy_to" && cp "${written[@]}" "$copy_to"/
fi
echo "gpu_checks: wrote ${written[*]}$( ((failed)) && echo '; a check FAILED, see the summary')"
exit "$failed"
