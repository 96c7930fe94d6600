"""Run one stage notebook's code in a fresh Python process and measure it: seconds, peak resident memory (host)
and, on CUDA, the allocator's peak. The code cells run as papermill would run them (parameters injected after the
cell tagged `parameters`), without a Jupyter kernel, so the process's peak RSS is the stage's own (VmHWM: getrusage's
ru_maxrss would carry the parent's size across fork and exec).

    python benchmarks/stage_runner.py 02_aggregation params.json out.json [--repo DIR]

--repo: the checkout whose notebooks and spot_utils to run (default: this one), e.g. an older commit's, to compare.
Used by benchmarks/memory.py and benchmarks/gpu_end_to_end.py; environment variables (SPOT_RUNS_DIR, ...) pass through.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss():
    """This checkout's spot_utils.base.memory.peak_rss_mib, loaded by path: the stage may run an older checkout."""
    spec = importlib.util.spec_from_file_location("_peak_memory", ROOT / "spot_utils" / "base" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.peak_rss_mib


def stage_code(notebook: Path, params: dict) -> str:
    """The notebook's code cells as one script, the parameters assigned after the `parameters` cell."""
    cells = json.loads(notebook.read_text())["cells"]
    parts = []
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        parts.append("\n".join(line for line in src.splitlines() if not line.lstrip().startswith("%")))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            parts.append("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    return "\n\n".join(parts) + "\n"


def run(stage: str, params: dict, out: Path, repo: Path = ROOT, env: dict | None = None, timeout: float = 3600) -> dict:
    """Run `stage` of `repo` on `params` in a child process; return (and write to `out`) its measurements."""
    env = dict(os.environ if env is None else env, PYTHONPATH=str(repo), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, __file__, stage, json.dumps(params), str(out), "--repo", str(repo)],
                          env=env, cwd=repo / "notebooks", capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(out.read_text())


def _child(stage: str, params: dict, out: Path, repo: Path) -> None:
    sys.path.insert(0, str(repo))
    code = stage_code(repo / "notebooks" / f"{stage}.ipynb", params)
    peak_rss_mib = _peak_rss()
    namespace = {"__name__": "__main__", "display": lambda *a, **k: None}
    start = time.perf_counter()
    exec(compile(code, f"{stage}.ipynb", "exec"), namespace)
    seconds = time.perf_counter() - start
    result = dict(stage=stage, seconds=round(seconds, 2),
                  peak_rss_mib=peak_rss_mib())
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage")
    ap.add_argument("params", help="the parameters as JSON")
    ap.add_argument("out")
    ap.add_argument("--repo", default=str(ROOT))
    a = ap.parse_args()
    _child(a.stage, json.loads(a.params), Path(a.out), Path(a.repo))
