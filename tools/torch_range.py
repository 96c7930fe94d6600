"""Run the test suite on a given torch version, in a temporary venv, and record the result.

    python tools/torch_range.py 2.8.0                      # -> benchmarks/results/torch_range_2.8.0.json

Steps: a clean clone of this repository at HEAD (so edits made meanwhile do not leak in), a fresh venv with
`torch==<version>` from the package index, this project installed with `pip install -e . --no-deps` plus its other
requirements, then `pytest` over tests/ (the fast suite, `make test`'s selection: distributed tests included).
The JSON written holds the installed torch, the commit, pytest's summary line, the failing tests and the times.
The lower bound of TORCH_RANGE (spot_utils/base/versions.py) is meant to be a version this script passed on.
PyPI's Linux torch wheels are CUDA builds (several GB with their nvidia-* dependencies): expect a long install.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile
import time

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], log, **kwargs) -> int:
    log.write(f"$ {' '.join(map(str, cmd))}\n")
    log.flush()
    return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs).returncode


def _requirements(version: str) -> list[str]:
    """The project's dependencies from pyproject.toml with torch pinned to `version` (and pytest for the run)."""
    import tomllib
    with open(REPO / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    deps = [d for d in project["dependencies"] if not re.match(r"torch\b", d)]
    return [f"torch=={version}", *deps, *project["optional-dependencies"]["dev"]]


def run_suite(version: str, work: Path, log, pytest_args: list[str]) -> dict:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    src, venv = work / "src", work / "venv"
    result: dict = {"torch_requested": version, "commit": commit, "python": sys.version.split()[0],
                    "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    t0 = time.time()
    if _run(["git", "clone", "-q", "--shared", str(REPO), str(src)], log) or \
            _run(["git", "-C", str(src), "checkout", "-q", commit], log):
        return result | {"outcome": "clone failed"}
    if _run([sys.executable, "-m", "venv", str(venv)], log):
        return result | {"outcome": "venv failed"}
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    if _run(pip + _requirements(version), log):
        return result | {"outcome": f"pip could not install torch=={version} with the project's requirements"}
    if _run(pip + ["--no-deps", "-e", str(src)], log):
        return result | {"outcome": "pip install -e . --no-deps failed"}
    result["install_s"] = round(time.time() - t0, 1)
    python = str(venv / "bin" / "python")
    result["torch_installed"] = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                                               capture_output=True, text=True).stdout.strip()
    t1 = time.time()
    junit = work / "junit.xml"
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    rc = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", "tests",
               *pytest_args], log, cwd=src, env=env)
    result["pytest_s"] = round(time.time() - t1, 1)
    result["pytest_rc"] = rc
    result |= _junit_summary(junit)
    result["outcome"] = {0: "passed", 2: "interrupted (the counts cover the tests run until then)"}.get(rc, "failed")
    return result


def _junit_summary(junit: Path) -> dict:
    """Counts and failing test ids from pytest's JUnit XML (empty when pytest wrote none)."""
    import xml.etree.ElementTree as ET
    if not junit.exists():
        return {}
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {"tests": int(suite.get("tests", 0)), "failures": int(suite.get("failures", 0)),
            "errors": int(suite.get("errors", 0)), "skipped": int(suite.get("skipped", 0)),
            "failed_tests": failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", help="torch version to install, e.g. 2.8.0")
    parser.add_argument("--out", type=Path, help="result JSON (default benchmarks/results/torch_range_<v>.json)")
    parser.add_argument("--work", type=Path, help="folder for the clone and venv (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", args.version):
        parser.error(f"torch version {args.version!r} is not of the form 2.8.0")
    out = args.out or REPO / "benchmarks" / "results" / f"torch_range_{args.version}.json"
    work = args.work or Path(tempfile.mkdtemp(prefix=f"torch_range_{args.version}_"))
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "log.txt"
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            result = run_suite(args.version, work, log, args.pytest_args)
        result["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        result["log_tail"] = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        sys.path.insert(0, str(REPO))
        from spot_utils.base.io import write_json  # deferred: the repository is put on sys.path first
        write_json(out, result)
        print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if result.get("outcome") == "passed" else 1)


if __name__ == "__main__":
    main()
