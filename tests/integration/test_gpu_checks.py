"""benchmarks/gpu_checks.sh's CPU-checkable parts: its arguments and plan, and the FSDP check on gloo."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_checks.sh"


def plan(*args):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_plan_on_the_gpu_runs_the_three_checks_in_bfloat16_within_ten_minutes():
    out = plan("--dry-run")
    assert out.returncode == 0, out.stderr
    steps = dict(line.split(" (timeout ", 1) for line in out.stdout.strip().splitlines())
    assert list(steps) == ["tests", "pipeline", "fsdp"]
    assert "-m cuda" in steps["tests"] and "tests/unit/test_cuda.py" in steps["tests"]
    assert "gpu_end_to_end.py --device cuda --dtype bfloat16" in steps["pipeline"]
    assert "--small" not in steps["pipeline"]
    assert "fsdp_check.py --device cuda --dtype bfloat16" in steps["fsdp"]
    assert sum(int(v.split(" s)", 1)[0]) for v in steps.values()) <= 600


def test_plan_on_the_cpu_is_scaled_down_and_setup_pypi_installs_torch_for_cuda():
    out = plan("--device", "cpu", "--small", "--only", "fsdp", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "fsdp (timeout 120 s): python3 benchmarks/fsdp_check.py --device cpu --dtype float32 --layers 1 --small"]
    out = plan("--setup", "pypi", "--dry-run")
    assert "download.pytorch.org/whl/cu130" in out.stdout and "pip install -e .[dev]" in out.stdout


def test_bad_arguments_are_named():
    for args, named in ((["--device", "tpu"], "'tpu'"), (["--only", "all"], "'all'"), (["--bogus"], "'--bogus'"),
                        (["--setup", "conda"], "'conda'")):
        out = plan(*args, "--dry-run")
        assert out.returncode == 2 and named in out.stderr, (args, out.stderr)


def test_fsdp_check_on_gloo_equals_score(tmp_path):
    out = tmp_path / "fsdp.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fsdp_check.py"), "--device", "cpu", "--small",
                          "--layers", "1", "--dtype", "float32", "--sequences", "3", "--seq-len", "24",
                          "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(out.read_text())
    assert result["backend"] == "gloo" and result["equal_within_tolerance"] and result["torch"]
    assert 0 < result["max_abs_score"] and result["max_abs_diff"] <= 1e-4 * result["max_abs_score"]
