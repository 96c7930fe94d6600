"""Run untrusted completions (HumanEval / MBPP) in a confined subprocess; what is and is not isolated:
docs/EXECUTION.md.

A completion passes only when the harness reaches its end after the program ran: the harness reads a random token
from a pipe the caller filled (and closes it) before the program starts, runs the program, and writes the token to
a result file the program cannot see (it is outside the program's file system) only if the program returned
normally with no trace or profile hook installed. Any early exit (`sys.exit`, `os._exit`, `SystemExit`, an atexit
or excepthook that ends the process) leaves the token unwritten: a failure, whatever the exit code.

Two isolation levels (ISOLATION_LEVELS):

- namespaces (default; Linux with user namespaces): new user, pid, mount, network, IPC and UTS namespaces. The
  program sees a new root file system holding only read-only binds of /usr, /etc, the Python installation and
  the virtual environment, a fresh /proc and a few /dev nodes; its only writable folder is a size-limited tmpfs
  (also mounted at /tmp and /dev/shm). No host path, Unix socket file or network interface is reachable. An init
  process outside the program's reach limits the resident memory of the whole process tree, and everything in
  the pid namespace dies with it. The program runs without capabilities: as root, under a second uid of the
  namespace mapped to `nobody`; otherwise in a further user namespace. Processes are limited by RLIMIT_NPROC.
- session: a new session, no new processes (RLIMIT_NPROC = 0), as `nobody` when run by root. Network and files
  are then limited only by permissions: used only when asked for by name (`isolation="session"`).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from tqdm.auto import tqdm

ISOLATION_LEVELS = ("namespaces", "session")
NOBODY = 65534
SANDBOX = "/sandbox"  # the program's folder inside the namespaces
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers; other machines fall back to refusing namespaces

# Runs the program: reads the token, closes its pipe, runs program.py as __main__, writes the token only if the
# program returned normally and installed no trace/profile hook (one could skip lines of the tests), then ends at
# once so no atexit hook or thread runs after it.
_HARNESS = r"""
import os, sys, threading
def _harness():
    token_fd, result_fd = int(sys.argv[1]), int(sys.argv[2])
    token = os.read(token_fd, 64)
    os.close(token_fd)
    os.set_inheritable(result_fd, False)
    hooked = []
    def watch(module, name):
        original = getattr(module, name)
        def hook(*args):
            hooked.append(name)
            return original(*args)
        setattr(module, name, hook)
    for module, name in ((sys, "settrace"), (sys, "setprofile"), (threading, "settrace"), (threading, "setprofile")):
        watch(module, name)
    sys.argv = ["program.py"]
    with open("program.py", encoding="utf-8") as f:
        code = compile(f.read(), "program.py", "exec")
    exec(code, {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__})
    if hooked or sys.gettrace() or sys.getprofile():
        sys.stderr.write(f"the program installed a trace or profile hook ({', '.join(hooked)}): not a pass\n")
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os.write(result_fd, token)
    os._exit(0)
_harness()
"""

# The launcher, run by the caller in a new session. It forks a child into new namespaces and writes the child's
# uid/gid maps from outside (as root: ns uid 0 = root for the setup, ns uid 1 = nobody for the program; otherwise
# ns uid 0 = the caller). The child forks init (pid 1 of the new pid namespace), which builds the new root, starts
# the program with its limits, polls the resident memory of every process in the namespace and records how the
# program ended. When init ends, the kernel kills every process left in the namespace.
_LAUNCHER = r"""
import ctypes, json, os, sys, time
cfg = json.loads(sys.argv[1])
status_fd = cfg["status_fd"]
os.set_inheritable(status_fd, False)  # kept across fork, closed at the program's exec
libc = ctypes.CDLL(None, use_errno=True)

def fail(what):
    os.write(status_fd, f"setup {what}: {os.strerror(ctypes.get_errno())}\n".encode())
    os._exit(125)

def check(rc, what):
    if rc != 0:
        fail(what)

root_mode = os.geteuid() == 0
go_r, go_w = os.pipe()
ready_r, ready_w = os.pipe()
child = os.fork()
if child:  # outside: map the child's ids, let it go, relay its end
    os.close(go_r), os.close(ready_w)
    if os.read(ready_r, 1) == b"u":
        uid, gid = os.geteuid(), os.getegid()
        maps = (f"0 {uid} 1\n1 {cfg['nobody']} 1\n", f"0 {gid} 1\n1 {cfg['nobody']} 1\n") if root_mode else \
               (f"0 {uid} 1\n", f"0 {gid} 1\n")
        try:
            if not root_mode:
                with open(f"/proc/{child}/setgroups", "w") as f:
                    f.write("deny")
            for name, text in zip(("uid_map", "gid_map"), maps):
                with open(f"/proc/{child}/{name}", "w") as f:
                    f.write(text)
            os.write(go_w, b"g")
        except OSError as e:
            os.write(status_fd, f"setup id maps: {e}\n".encode())
    os.close(go_w)
    _, st = os.waitpid(child, 0)
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 125)

os.close(go_w), os.close(ready_r)
PR_SET_PDEATHSIG = 1
CLONE = dict(NEWNS=0x20000, NEWUTS=0x4000000, NEWIPC=0x8000000, NEWUSER=0x10000000, NEWPID=0x20000000,
             NEWNET=0x40000000)
libc.prctl(PR_SET_PDEATHSIG, 9)
check(libc.unshare(sum(CLONE.values())), "unshare")
os.write(ready_w, b"u")
if os.read(go_r, 1) != b"g":
    os._exit(125)
init = os.fork()
if init:
    _, st = os.waitpid(init, 0)
    os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 125)

# init: pid 1 of the new pid namespace, root of the new user namespace
libc.prctl(PR_SET_PDEATHSIG, 9)
MS = dict(RDONLY=1, NOSUID=2, NODEV=4, NOEXEC=8, REMOUNT=32, BIND=4096, REC=16384, PRIVATE=1 << 18)

def mount(source, target, fstype, flags, data=None):
    check(libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                     flags, data.encode() if data else None), f"mount {target}")

class MountAttr(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("attr_set", "attr_clr", "propagation", "userns_fd")]

def mount_setattr(path, flags, set_=0, clear=0):  # syscall 442 on every architecture
    attr = MountAttr(set_, clear, 0, 0)
    check(libc.syscall(442, -100, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr)),
          "mount_setattr " + path)

new = cfg["newroot"]
mount(None, "/", None, MS["REC"] | MS["PRIVATE"])
mount("tmpfs", new, "tmpfs", MS["NOSUID"] | MS["NODEV"], "size=1m,mode=755")
for link, target in cfg["symlinks"]:
    os.symlink(target, new + link)
box = new + cfg["sandbox"]
os.makedirs(box)
mount("tmpfs", box, "tmpfs", MS["NOSUID"] | MS["NODEV"],
      f"size={cfg['disk_mb']}m,nr_inodes={cfg['inodes']},mode=700")
with open(box + "/program.py", "w", encoding="utf-8") as f, open(cfg["program"], encoding="utf-8") as src:
    f.write(src.read())
for path in ("/tmp", "/dev/shm"):  # before the binds: a Python installed under /tmp is bound on top, not hidden
    os.makedirs(new + path)
    mount(box, new + path, None, MS["BIND"])
for path in cfg["binds"]:
    os.makedirs(new + path, exist_ok=True)
    mount(path, new + path, None, MS["BIND"] | MS["REC"])
os.makedirs(new + "/dev", exist_ok=True)
for node in cfg["devices"]:
    open(new + node, "w").close()
    mount(node, new + node, None, MS["BIND"])
os.makedirs(new + "/proc")
mount("proc", new + "/proc", "proc", MS["NOSUID"] | MS["NODEV"] | MS["NOEXEC"])
AT_RECURSIVE, RDONLY, NOSUID = 0x8000, 1, 2
mount_setattr(new, AT_RECURSIVE, set_=RDONLY | NOSUID)
for path in (cfg["sandbox"], "/tmp", "/dev/shm"):
    mount_setattr(new + path, 0, clear=RDONLY)
if root_mode:
    for path in (box, box + "/program.py"):
        os.chown(path, 1, 1)
os.chdir(new)
check(libc.syscall(cfg["pivot_root"], b".", b"."), "pivot_root")
check(libc.umount2(b".", 2), "detach the old root")  # MNT_DETACH
os.chdir(cfg["sandbox"])

program = os.fork()
if program == 0:
    try:
        if root_mode:
            os.setgroups([])
            os.setresgid(1, 1, 1)
            os.setresuid(1, 1, 1)
        elif libc.unshare(CLONE["NEWUSER"]) != 0:  # no capability over the mounts and network set up above
            fail("unshare the program's user namespace")
        import resource
        for name, value in cfg["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (value, value))
    except OSError as e:
        os.write(status_fd, f"setup program: {e}\n".encode())
        os._exit(125)
    os.execve(cfg["python"], [cfg["python"], "-I", "-B", "-c", cfg["harness"], str(cfg["token_fd"]),
                              str(cfg["result_fd"])], cfg["env"])
os.close(cfg["token_fd"]), os.close(cfg["result_fd"])
page, limit = os.sysconf("SC_PAGE_SIZE"), cfg["memory_mb"] << 20
while True:
    pid, st = os.waitpid(-1, os.WNOHANG)
    if pid == program:
        os.write(status_fd, (f"signal {os.WTERMSIG(st)}\n" if os.WIFSIGNALED(st) else
                             f"exit {os.WEXITSTATUS(st)}\n").encode())
        break
    if pid:  # an orphan reparented to init
        continue
    resident = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit() and entry != "1":
            try:
                with open(f"/proc/{entry}/statm") as f:
                    resident += int(f.read().split()[1]) * page
            except (OSError, IndexError, ValueError):
                pass
    if resident > limit:
        os.write(status_fd, f"memory {resident >> 20}\n".encode())
        break
    time.sleep(cfg["poll_seconds"])
os._exit(0)
"""


@dataclass
class ExecResult:
    """Outcome of one program: passed only if the harness ran to its end within every limit."""
    passed: bool
    status: str  # passed | failed | timeout | memory | cpu
    returncode: int | None
    seconds: float
    stderr: str
    isolation: str  # the ISOLATION_LEVELS entry it ran under


def run_program(program: str, timeout: float = 10.0, memory_mb: int = 1024, cpu_seconds: int | None = None,
                file_mb: int = 16, disk_mb: int = 64, processes: int = 32, isolation: str | None = None
                ) -> ExecResult:
    """Execute `program` (Python source) confined; never raises for what the program does, only when the
    confinement cannot be set up or is not allowed.

    timeout: wall-clock seconds after which everything the program started is killed (cpu_seconds defaults to
    ceil(timeout)). memory_mb: resident memory of the whole process tree (namespaces) and each process's address
    space. file_mb: largest file; disk_mb: its writable folder (namespaces); processes: most processes at once.
    isolation: None for 'namespaces' (a RuntimeError where they are unavailable), or a level by name.
    """
    level = isolation or "namespaces"
    if level not in ISOLATION_LEVELS:
        raise ValueError(f"unknown isolation {level!r}; accepted: {ISOLATION_LEVELS}")
    if isolation is None and isolation_level() != "namespaces":
        raise RuntimeError("completions cannot be confined in namespaces here (no user namespaces or no "
                           "pivot_root for this machine); the weaker fallback runs only when asked for by name: "
                           "isolation='session' (docs/EXECUTION.md)")
    if level == "session" and os.geteuid() == 0 and not _as_nobody():
        raise RuntimeError("the session level would run completions as root (the user nobody cannot run "
                           f"{sys.executable} here), where a program may kill or delete anything: refused")
    cpu_seconds = cpu_seconds or int(timeout + 0.999)
    rlimits = {"RLIMIT_AS": memory_mb << 20, "RLIMIT_CPU": cpu_seconds, "RLIMIT_FSIZE": file_mb << 20,
               "RLIMIT_CORE": 0, "RLIMIT_NPROC": processes if level == "namespaces" else 0}
    token = secrets.token_hex(16).encode()
    with tempfile.TemporaryDirectory(prefix="spot_exec_", ignore_cleanup_errors=True) as root:
        program_path = os.path.join(root, "program.py")
        with open(program_path, "w", encoding="utf-8") as f:
            f.write(program)
        status_path, result_path = os.path.join(root, "status"), os.path.join(root, "result")
        token_r, token_w = os.pipe()
        os.write(token_w, token)
        os.close(token_w)
        result_fd = os.open(result_path, os.O_WRONLY | os.O_CREAT, 0o600)
        status_fd = os.open(status_path, os.O_WRONLY | os.O_CREAT, 0o600)
        fds = (token_r, result_fd, status_fd)
        if level == "namespaces":
            work = SANDBOX
            cmd = [sys.executable, "-I", "-S", "-B", "-c", _LAUNCHER, json.dumps(_namespace_config(
                root, program_path, rlimits, memory_mb, disk_mb, token_r, result_fd, status_fd))]
            kwargs = {}
        else:
            work = os.path.join(root, "work")
            os.mkdir(work)
            shutil.copy(program_path, work)
            cmd = _harness_command(token_r, result_fd, rlimits)
            kwargs = {}
            if os.geteuid() == 0:  # root ignores RLIMIT_NPROC and may signal anything: run as nobody
                os.chown(work, NOBODY, NOBODY)
                kwargs = dict(user=NOBODY, group=NOBODY, extra_groups=[])
        with open(os.path.join(root, "stderr"), "w+b") as err_file:
            start = time.perf_counter()
            try:
                proc = subprocess.Popen(cmd, cwd=work if level == "session" else root, env=_environment(work),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_file,
                                        start_new_session=True, pass_fds=fds, **kwargs)
            finally:
                for fd in fds:
                    os.close(fd)
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
            err_file.seek(max(0, os.fstat(err_file.fileno()).st_size - 2000))
            err = err_file.read().decode("utf-8", "replace")
        with open(result_path, "rb") as f:
            finished = f.read() == token
        with open(status_path) as f:
            ended = f.read().split()
        rc = proc.returncode
        if level == "namespaces" and not timed_out:
            if ended[:1] == ["setup"] or not ended:  # not the program's doing: never scored as a failure
                raise RuntimeError(f"the confinement could not be set up: {' '.join(ended) or err[-500:]}")
            rc = None if ended[0] == "memory" else -int(ended[1]) if ended[0] == "signal" else int(ended[1])
    if not (timed_out or finished) and rc == 0:
        err += "\n[the harness did not reach its end: the program exited before its tests finished]\n"
    if timed_out:
        status = "timeout"
    elif finished:
        status = "passed"
    elif ended[:1] == ["memory"] or "MemoryError" in err:
        status = "memory"
    elif rc in (-signal.SIGXCPU, -signal.SIGKILL) and seconds < timeout:
        status = "cpu"
    else:
        status = "failed"
    return ExecResult(status == "passed", status, None if timed_out else rc, round(seconds, 3), err, level)


def _environment(work: str) -> dict:
    """The program's whole environment: nothing of the caller's."""
    return {"PATH": os.defpath, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _harness_command(token_fd: int, result_fd: int, rlimits: dict) -> list[str]:
    """Session level: set the limits (soft = hard), then run the harness in the same interpreter."""
    limits = "".join(f"_r.setrlimit(_r.{name}, ({value}, {value}))\n" for name, value in rlimits.items())
    return [sys.executable, "-I", "-B", "-c", "import resource as _r\n" + limits + "del _r\n" + _HARNESS,
            str(token_fd), str(result_fd)]


def _namespace_config(root: str, program_path: str, rlimits: dict, memory_mb: int, disk_mb: int, token_fd: int,
                      result_fd: int, status_fd: int) -> dict:
    """What the launcher needs: the folders bound read-only into the new root, the limits, the descriptors."""
    newroot = os.path.join(root, "newroot")
    os.mkdir(newroot)
    symlinks, binds = [], []
    for top in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            symlinks.append((top, os.readlink(top)))
        elif os.path.isdir(top):
            binds.append(top)
    for path in sorted({os.path.realpath(p) for p in (sys.base_prefix, sys.prefix,
                                                      os.path.dirname(os.path.realpath(sys.executable)))}):
        if not any(path == b or path.startswith(b + "/") for b in binds):
            binds.append(path)
    devices = [d for d in ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom") if os.path.exists(d)]
    return dict(newroot=newroot, symlinks=symlinks, binds=binds, devices=devices, sandbox=SANDBOX, disk_mb=disk_mb,
                inodes=4096, program=program_path, rlimits=rlimits, memory_mb=memory_mb, poll_seconds=0.01,
                python=sys.executable, harness=_HARNESS, env=_environment(SANDBOX), token_fd=token_fd,
                result_fd=result_fd, status_fd=status_fd, nobody=NOBODY,
                pivot_root=_PIVOT_ROOT.get(platform.machine(), -1))


def _kill_marked(marker: bytes) -> None:
    """SIGKILL every readable process whose environment holds `marker` (a session level safety net for processes
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
    """Whether the session level runs programs as nobody: as root, when nobody may run this Python."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run([sys.executable, "-I", "-S", "-c", "pass"], user=NOBODY, group=NOBODY,
                              extra_groups=[], capture_output=True, cwd="/", timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=1)
def isolation_level() -> str:
    """The best confinement this machine allows: 'namespaces' if a probe program passes under it, else 'session'
    (which run_program still uses only when asked for by name)."""
    if sys.platform == "linux" and platform.machine() in _PIVOT_ROOT:
        try:
            if run_program("pass\n", timeout=20, isolation="namespaces").passed:
                return "namespaces"
        except RuntimeError:
            pass
    return "session"


def isolation(level: str | None = None) -> str:
    """One sentence for reports: how completions run under `level` (None: the default, namespaces or refusal)."""
    if level is None and isolation_level() != "namespaces":
        return ("Completions cannot be confined in namespaces here, and the weaker session level runs only when "
                "asked for by name (isolation='session'; docs/EXECUTION.md).")
    if (level or "namespaces") == "namespaces":
        return ("Completions ran confined in Linux namespaces (isolation: namespaces): no network, no host path "
                "but read-only system and Python folders, a size-limited private working folder, limits on "
                "processes and on the memory of the whole process tree; a pass counted only when the harness "
                "reached its end (docs/EXECUTION.md).")
    return ("Completions ran in a new session that may not start processes (isolation: session, asked for by name: "
            "no user namespaces here); network access and writes outside their folder were limited only by file "
            "permissions; a pass counted only when the harness reached its end (docs/EXECUTION.md).")


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
