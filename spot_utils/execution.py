"""Run untrusted completions (HumanEval / MBPP) in a limited subprocess (docs/METHOD.md, Benchmark metrics).

Each program runs in a fresh Python interpreter (`-I`: no user site, no PYTHON* variables) in its own
temporary working directory with a clean environment, its own process group, and resource limits:
address space (RLIMIT_AS), CPU seconds (RLIMIT_CPU), file size (RLIMIT_FSIZE) and a wall-clock timeout
after which the whole process group is killed. A prelude switches off the process- and file-destroying
functions a completion has no business calling. This limits accidents; it is not a security sandbox
(run as root, a program could raise its own hard limits again; the wall-clock kill still applies).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm.auto import tqdm

# Runs before the program: limits first (soft = hard: an unprivileged program cannot raise them), then the guards.
_PRELUDE = """\
import resource as _r
for _lim, _v in ((_r.RLIMIT_AS, {memory}), (_r.RLIMIT_CPU, {cpu}), (_r.RLIMIT_FSIZE, {fsize}), (_r.RLIMIT_CORE, 0)):
    _r.setrlimit(_lim, (_v, _v))
import builtins as _b, os as _os, shutil as _sh, subprocess as _sp
for _name in ("kill", "killpg", "system", "fork", "forkpty", "putenv", "remove", "unlink", "removedirs",
              "rmdir", "rename", "renames", "truncate", "chmod", "chown", "setuid", "execv", "execve", "spawnv"):
    setattr(_os, _name, None)
_sh.rmtree = _sh.move = _sh.chown = None
_sp.Popen = None
_b.exit = _b.quit = None
del _b, _os, _sh, _sp, _r, _name, _lim, _v
"""


@dataclass
class ExecResult:
    """Outcome of one program: passed only if it exited 0 within every limit."""
    passed: bool
    status: str  # passed | failed | timeout | memory | cpu
    returncode: int | None
    seconds: float
    stderr: str


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None,
                file_mb: int = 16) -> ExecResult:
    """Execute `program` (Python source) in a limited subprocess; never raises for what the program does.

    timeout: wall-clock seconds before the process group is killed; cpu_seconds defaults to ceil(timeout).
    """
    cpu_seconds = cpu_seconds or int(timeout + 0.999)
    with tempfile.TemporaryDirectory(prefix="spot_exec_", ignore_cleanup_errors=True) as work:
        path = os.path.join(work, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_PRELUDE.format(memory=memory_mb << 20, cpu=cpu_seconds, fsize=file_mb << 20) + program)
        env = {"PATH": os.defpath, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-I", "-B", path], cwd=work, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, err = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            try:  # the whole group: children the program may have started go too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if timed_out:
            _, err = proc.communicate()
        seconds = time.perf_counter() - start
    err = (err or b"").decode("utf-8", "replace")[-2000:]
    rc = proc.returncode
    if timed_out:
        status = "timeout"
    elif rc == 0:
        status = "passed"
    elif "MemoryError" in err:
        status = "memory"
    elif rc in (-signal.SIGXCPU, -signal.SIGKILL) and seconds < timeout:
        status = "cpu"
    else:
        status = "failed"
    return ExecResult(status == "passed", status, None if timed_out else rc, round(seconds, 3), err)


def humaneval_program(problem: dict, completion: str) -> str:
    """The program that checks a HumanEval completion: prompt + completion + tests + check(entry_point)."""
    return (problem["prompt"] + completion + "\n\n" + problem["test"] + "\n\n"
            + f"check({problem['entry_point']})\n")


def mbpp_program(problem: dict, completion: str) -> str:
    """The program that checks an MBPP completion: setup code, the completion, then its assert lines."""
    setup = problem.get("test_setup_code") or ""
    return setup + "\n" + completion + "\n\n" + "\n".join(problem["test_list"]) + "\n"


def run_many(programs: list[str], workers: int = 2, desc: str = "execute", **limits) -> list[ExecResult]:
    """Run programs in parallel subprocesses (threads only wait on them); results in input order."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(lambda p: run_program(p, **limits), programs), total=len(programs),
                         desc=desc, leave=False))
