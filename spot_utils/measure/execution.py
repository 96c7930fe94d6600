"""Run untrusted completions (HumanEval / MBPP) in a confined subprocess; what is isolated: docs/EXECUTION.md.

Each program runs in a fresh Python interpreter (`-I`: no user site, no PYTHON* variables) in its own temporary
folder with a clean environment and resource limits (address space, CPU seconds, file size, no core files). Its
output goes to files, never to pipes, so nothing it leaves behind can hold the caller; the wall-clock timeout
always holds. Two levels of confinement, the best one available is used:

- namespaces (Linux with unprivileged user namespaces and util-linux `unshare`): new user, pid, mount, network,
  IPC and UTS namespaces. Every process the program starts lives in the pid namespace and is killed with it
  when the program ends or times out; the network namespace has no interface up (no connection anywhere, the
  host's 127.0.0.1 included); the whole file system is read-only except the program's folder; /proc shows only
  the namespace, so the caller's environment cannot be read. The program runs in a further user namespace
  without capabilities over any of these, so it cannot undo them.
- session (no user namespaces): a new session and RLIMIT_NPROC = 0, so the program cannot start any process
  (run as root, it runs as the user nobody where nobody may run this Python: the limit then holds and the
  caller's /proc entries are unreadable); processes still marked with the program's environment are killed at
  the end. Network and writes outside the folder are then limited only by file permissions.

A prelude also switches off the process- and file-destroying functions of os / shutil / subprocess; it guards
against accidents only (importlib.reload(os) undoes it), the confinement above is what holds.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tqdm.auto import tqdm

ISOLATION_LEVELS = ("namespaces", "session")
NOBODY = 65534

# Runs before the program: limits first (soft = hard: an unprivileged program cannot raise them), then the guards.
_PRELUDE = """\
import resource as _r
for _lim, _v in ((_r.RLIMIT_AS, {memory}), (_r.RLIMIT_CPU, {cpu}), (_r.RLIMIT_FSIZE, {fsize}), (_r.RLIMIT_CORE, 0),
                 *{nproc}):
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

# pid 1 of the new namespaces, as root of the new user namespace: make every mount read-only except the program's
# folder, start the program in a further user namespace (no capability over these mounts or the network), wait,
# record how it ended. When this process ends (or is killed), the kernel kills everything left in the namespace.
_INIT = r"""
import ctypes, os, sys
work, program, status_fd = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.set_inheritable(status_fd, False)
status = os.fdopen(status_fd, "w")  # opened by the caller: no file open for writing here blocks the read-only remount
libc = ctypes.CDLL(None, use_errno=True)

def check(rc, what):
    if rc != 0:
        status.write(f"setup {what}: {os.strerror(ctypes.get_errno())}\n")
        status.close()
        os._exit(125)

class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

def mount_setattr(path, flags, set_=0, clear=0):  # syscall 442 on every architecture
    attr = MountAttr(set_, clear, 0, 0)
    check(libc.syscall(442, -100, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)), "mount_setattr " + path)

check(libc.mount(work.encode(), work.encode(), None, 4096 | 16384, None), "bind " + work)  # MS_BIND | MS_REC
mount_setattr("/", 0x8000, set_=1)  # AT_RECURSIVE, MOUNT_ATTR_RDONLY
mount_setattr(work, 0, clear=1)
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        os._exit(125)
    os.execve(sys.executable, [sys.executable, "-I", "-B", program], dict(os.environ))
_, st = os.waitpid(pid, 0)
status.write(f"signal {os.WTERMSIG(st)}\n" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}\n")
status.close()
"""
_UNSHARE = ["--user", "--map-root-user", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--net",
            "--ipc", "--uts"]


@dataclass
class ExecResult:
    """Outcome of one program: passed only if it exited 0 within every limit."""
    passed: bool
    status: str  # passed | failed | timeout | memory | cpu
    returncode: int | None
    seconds: float
    stderr: str


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None,
                file_mb: int = 16, isolation: str | None = None) -> ExecResult:
    """Execute `program` (Python source) in a confined subprocess; never raises for what the program does (only
    when the confinement itself cannot be set up).

    timeout: wall-clock seconds after which the program and everything it started are killed; cpu_seconds defaults
    to ceil(timeout). isolation: one of ISOLATION_LEVELS, default the best available (see isolation()).
    """
    level = isolation or isolation_level()
    if level not in ISOLATION_LEVELS:
        raise ValueError(f"unknown isolation {level!r}; accepted: {ISOLATION_LEVELS}")
    cpu_seconds = cpu_seconds or int(timeout + 0.999)
    nproc = "((_r.RLIMIT_NPROC, 0),)" if level == "session" else "()"
    with tempfile.TemporaryDirectory(prefix="spot_exec_", ignore_cleanup_errors=True) as root:
        work = os.path.join(root, "work")
        os.mkdir(work)
        path = os.path.join(work, "program.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_PRELUDE.format(memory=memory_mb << 20, cpu=cpu_seconds, fsize=file_mb << 20, nproc=nproc)
                    + program)
        env = {"PATH": os.defpath, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        status_path = os.path.join(root, "status")
        kwargs = {}
        if level == "namespaces":
            status_fd = os.open(status_path, os.O_WRONLY | os.O_CREAT, 0o600)
            cmd = [shutil.which("unshare"), *_UNSHARE, "--", sys.executable, "-I", "-S", "-B", "-c", _INIT, work,
                   path, str(status_fd)]
            kwargs = dict(pass_fds=(status_fd,))
        else:
            cmd = [sys.executable, "-I", "-B", path]
            if _as_nobody():  # root ignores RLIMIT_NPROC: run as nobody
                os.chown(work, NOBODY, NOBODY)
                kwargs = dict(user=NOBODY, group=NOBODY, extra_groups=[])
        with open(os.path.join(root, "stderr"), "w+b") as err_file:
            start = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err_file, start_new_session=True, **kwargs)
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # the whole session; in a pid namespace, its init going takes every process in it along
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
                if level == "session":
                    _kill_marked(f"HOME={work}".encode())
            seconds = time.perf_counter() - start
            if level == "namespaces":
                os.close(status_fd)
            err_file.seek(max(0, os.fstat(err_file.fileno()).st_size - 2000))
            err = err_file.read().decode("utf-8", "replace")
        rc = proc.returncode
        if level == "namespaces" and not timed_out:
            ended = open(status_path).read().split() if os.path.exists(status_path) else []
            if ended[:1] == ["setup"] or not ended:  # not the program's doing: never scored as a failure
                raise RuntimeError(f"the confinement could not be set up: {' '.join(ended) or err[-500:]}")
            rc = -int(ended[1]) if ended[0] == "signal" else int(ended[1])
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


def _kill_marked(marker: bytes) -> None:
    """SIGKILL every readable process whose environment holds `marker` (a session mode safety net for processes
    that left the session, should the process limit not hold)."""
    for pid in filter(str.isdigit, os.listdir("/proc") if os.path.isdir("/proc") else []):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker + b"\0" in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@functools.lru_cache(maxsize=1)
def _as_nobody() -> bool:
    """Whether session mode runs programs as nobody: as root, when nobody may run this Python."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], user=NOBODY, group=NOBODY,
                              extra_groups=[], capture_output=True, cwd="/", timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=1)
def isolation_level() -> str:
    """The best confinement this machine allows: 'namespaces' if a probe program runs under it, else 'session'."""
    if sys.platform == "linux" and shutil.which("unshare"):
        try:
            if run_program("pass\n", timeout=20, isolation="namespaces").passed:
                return "namespaces"
        except RuntimeError:
            pass
    return "session"


def isolation() -> str:
    """One sentence for reports: how executed completions were confined on this machine."""
    if isolation_level() == "namespaces":
        return ("Completions ran confined in Linux namespaces: no network, a read-only file system except their "
                "own folder, their processes killed at the end or at the timeout, the caller's environment "
                "invisible (docs/EXECUTION.md).")
    who = ", as the user nobody" if _as_nobody() else " (as root: the limit does not hold)" if os.geteuid() == 0 else ""
    return (f"Completions ran in a new session that may not start processes{who}: without user namespaces here, network access and writes outside their "
            "folder were limited only by file permissions (docs/EXECUTION.md).")


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
