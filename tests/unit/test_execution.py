"""The executor: what passes, and each confinement claim of docs/EXECUTION.md (named there by test name)."""
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from spot_utils.data import eval_sets as evalsets
from spot_utils.measure import execution
from spot_utils.measure.execution import (ISOLATION_LEVELS, humaneval_program, isolation, isolation_level,
                                          mbpp_program, run_many, run_program)

# the sandbox folder (also /tmp) holds the program and, where this Python is installed under /tmp (a clone there),
# the folder on the way to its read-only bind, so that the interpreter keeps its path
_UNDER_TMP = [p for p in {os.path.realpath(q) for q in (sys.prefix, sys.base_prefix)} if p.startswith("/tmp/")]
SANDBOX_LISTING = sorted({"program.py", *(p.split("/")[2] for p in _UNDER_TMP)})

namespaces_only = pytest.mark.skipif(isolation_level() != "namespaces",
                                     reason="no user namespaces here: only the session level, asked for by name, "
                                            "runs (docs/EXECUTION.md)")
# the session level runs only where it need not run as root (as root it runs as nobody or is refused)
SESSION_RUNS = os.geteuid() != 0 or execution._as_nobody()
LEVELS = [level for level in ISOLATION_LEVELS
          if (level == "namespaces" and isolation_level() == "namespaces") or (level == "session" and SESSION_RUNS)]
session_only = pytest.mark.skipif(not SESSION_RUNS, reason="as root, the session level needs a Python the user "
                                                           "nobody may run")


def bounded(fn, seconds):
    """fn()'s result, or a test failure if it has not returned within `seconds` (it is left running)."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0]


def canonical(problems):
    results = run_many([humaneval_program(p, p["canonical_solution"]) for p in problems], workers=2, timeout=20)
    return [(p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(problems, results) if not r.passed]


# --- what passes -----------------------------------------------------------------------------------------------

def test_a_sample_of_canonical_humaneval_solutions_pass():
    assert not canonical(random.Random(0).sample(evalsets.humaneval(), 20))


@pytest.mark.slow
def test_all_canonical_humaneval_solutions_pass():
    problems = evalsets.humaneval()
    assert len(problems) == 164
    assert not canonical(problems)


def test_wrong_solution_fails():
    problem = evalsets.humaneval()[0]  # has_close_elements
    result = run_program(humaneval_program(problem, "    return False\n"))
    assert not result.passed and result.status == "failed" and "AssertionError" in result.stderr


def test_syntax_error_fails():
    problem = evalsets.humaneval()[2]
    assert run_program(humaneval_program(problem, "    return (\n")).status == "failed"


def test_mbpp_program_runs_its_asserts():
    problem = {"test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": ""}
    assert run_program(mbpp_program(problem, "def add(a, b):\n    return a + b\n")).passed
    assert not run_program(mbpp_program(problem, "def add(a, b):\n    return a - b\n")).passed


# --- a wrong solution that ends the process early never passes, whatever its exit code --------------------------

WRONG = "    return False\n"
EARLY_EXITS = {
    "sys_exit_in_the_body": "    import sys\n    sys.exit(0)\n",
    "os_exit_in_the_body": "    import os\n    os._exit(0)\n",
    "raise_systemexit": "    raise SystemExit(0)\n",
    "module_level_sys_exit_after_the_body": WRONG + "\nimport sys\nsys.exit(0)\n",
    "atexit_os_exit": WRONG + "\nimport atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook_os_exit": WRONG + "\nimport os, sys\nsys.excepthook = lambda *args: os._exit(0)\n",
    "setprofile_exit_at_check": WRONG + "\nimport os, sys\n"
                                "sys.setprofile(lambda frame, event, arg: os._exit(0) if event == 'call' and "
                                "frame.f_code.co_name == 'check' else None)\n",
    "settrace_exit_at_an_exception": WRONG + "\nimport os, sys\n"
                                     "def trace(frame, event, arg):\n"
                                     "    if event == 'exception':\n        os._exit(0)\n    return trace\n"
                                     "sys.settrace(trace)\n",
    "main_guard_sys_exit": WRONG + "\n\ndef main():\n    return 0\n\n"
                           "if __name__ == '__main__':\n    import sys\n    sys.exit(main())\n",
}


@pytest.mark.parametrize("name", EARLY_EXITS)
def test_an_early_exit_does_not_pass(name):
    result = run_program(humaneval_program(evalsets.humaneval()[0], EARLY_EXITS[name]), timeout=20)
    assert not result.passed and result.status == "failed"


def test_a_trace_hook_that_skips_the_failing_assert_does_not_pass():
    # the hook jumps over the assert line, so check() returns normally: only the hook rule stops it
    skip = ("import sys\n"
            "def trace(frame, event, arg):\n"
            "    if frame.f_code.co_name != 'check':\n        return None\n"
            "    def line(frame, event, arg):\n"
            "        if event == 'line' and frame.f_lineno == frame.f_code.co_firstlineno + 1:\n"
            "            frame.f_lineno += 1\n"
            "        return line\n"
            "    return line\n"
            "sys.settrace(trace)\n")
    tests = "def check(candidate):\n    assert candidate() == 2\n    print('check returned')\n\ncheck(f)\n"
    result = run_program("def f():\n    return 1\n" + skip + tests)
    assert not result.passed and "trace or profile hook" in result.stderr
    assert run_program("def f():\n    return 2\n" + tests).passed  # the same tests pass without the hook


def test_the_token_is_not_in_anything_the_program_can_read():
    probe = ("import os\n"
             f"assert sorted(os.listdir('.')) == {SANDBOX_LISTING!r}\n"
             "targets = []\n"
             "for fd in os.listdir('/proc/self/fd'):\n"
             "    try:\n        targets.append(os.readlink(f'/proc/self/fd/{fd}'))\n"
             "    except FileNotFoundError:  # listdir's own descriptor\n        pass\n"
             "assert targets and not any('pipe' in t for t in targets), targets  # the token's pipe is closed\n")
    assert run_program(probe).passed


# --- confinement ---------------------------------------------------------------------------------------------

def test_relative_writes_and_tempfile_work_in_the_working_folder():
    program = ("import os, tempfile\n"
               "open('out.txt', 'w').write('x')\nassert open('out.txt').read() == 'x'\nos.remove('out.txt')\n"
               "with tempfile.NamedTemporaryFile() as f:\n    f.write(b'y')\n"
               "with tempfile.TemporaryDirectory() as d:\n    open(os.path.join(d, 'z'), 'w').write('z')\n"
               "open('/tmp/abs.txt', 'w').write('w')\n"
               "assert os.getcwd() == os.environ['TMPDIR'] == os.environ['HOME']\n")
    result = run_program(program)
    assert result.passed, result.stderr


def test_the_environment_is_clean(monkeypatch):
    monkeypatch.setenv("SPOT_SECRET", "x")
    program = ("import os\n"
               "assert sorted(os.environ) == ['HOME', 'LANG', 'MKL_NUM_THREADS', 'OMP_NUM_THREADS', "
               "'OPENBLAS_NUM_THREADS', 'PATH', 'PYTHONHASHSEED', 'TMPDIR'], sorted(os.environ)\n"
               "assert os.environ['PYTHONHASHSEED'] == '0' and os.environ['OMP_NUM_THREADS'] == '1'\n")
    assert run_program(program).passed


@namespaces_only
def test_the_program_holds_no_capability():
    program = ("caps = dict(line.split(':') for line in open('/proc/self/status') if line.startswith('Cap'))\n"
               "assert int(caps['CapEff'], 16) == 0 and int(caps['CapPrm'], 16) == 0, caps\n")
    result = run_program(program)
    assert result.passed, result.stderr


@namespaces_only
def test_the_folder_holds_at_most_4096_inodes():
    program = "for i in range(5000):\n    open(f'f{i}', 'w').close()\n"
    result = run_program(program, timeout=30)
    assert not result.passed and "No space left" in result.stderr


@namespaces_only
def test_writing_600_mb_fails():
    program = ("for i in range(60):\n"
               "    with open(f'part{i}', 'wb') as f:\n        f.write(b'x' * (10 << 20))\n")
    result = run_program(program, timeout=30)
    assert not result.passed and "No space left" in result.stderr


def test_a_file_over_file_mb_fails():
    result = run_program("open('big', 'wb').write(b'x' * (20 << 20))\n", file_mb=16, timeout=30)
    assert not result.passed and "File too large" in result.stderr


@namespaces_only
def test_forks_beyond_the_process_limit_fail():
    program = ("import os, time\nchildren = 0\n"
               "for _ in range({n}):\n"
               "    if os.fork() == 0:\n        time.sleep(30)\n        os._exit(0)\n"
               "    children += 1\n")
    result = bounded(lambda: run_program(program.format(n=200), processes=32, timeout=30), 60)
    assert not result.passed and "Resource temporarily unavailable" in result.stderr
    assert run_program(program.format(n=5), processes=32, timeout=30).passed  # forks within the limit work


@namespaces_only
def test_three_children_of_800_mb_exceed_memory_mb_1024():
    program = ("import os, time\n"
               "for _ in range({n}):\n"
               "    if os.fork() == 0:\n        block = b'x' * (800 << 20)\n        time.sleep(1)\n"
               "        os._exit(0)\n"
               "for _ in range({n}):\n    os.wait()\n")
    result = bounded(lambda: run_program(program.format(n=3), memory_mb=1024, timeout=30), 60)
    assert not result.passed and result.status == "memory"
    alone = run_program(program.format(n=1), memory_mb=1024, timeout=30)  # one of them fits
    assert alone.passed, alone.stderr


@pytest.mark.parametrize("bomb", ["x = bytearray(8 << 30)\n",
                                  "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n"])
def test_memory_bomb_is_stopped(bomb):
    result = run_program(bomb, timeout=20, memory_mb=512)
    assert not result.passed and result.status == "memory"


def test_infinite_loop_is_stopped_by_the_wall_clock():
    result = run_program("import time\nwhile True:\n    time.sleep(0.01)\n", timeout=1.5)
    assert not result.passed and result.status == "timeout" and result.seconds < 10


def test_busy_loop_is_stopped():
    result = run_program("while True:\n    pass\n", timeout=3, cpu_seconds=1)
    assert not result.passed and result.status in ("cpu", "timeout") and result.seconds < 10


@namespaces_only
def test_no_unix_socket_file_of_the_host_is_reachable():
    folder = tempfile.mkdtemp(prefix="spot_sock_", dir="/tmp")
    path = os.path.join(folder, "s")
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path)
            server.listen()
            server.settimeout(0.5)
            program = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})\n"
                       "s.sendall(b'leak')\n")
            result = bounded(lambda: run_program(program, timeout=10), 30)
            assert not result.passed and "FileNotFoundError" in result.stderr
            with pytest.raises(socket.timeout):
                server.accept()
    finally:
        os.unlink(path)
        os.rmdir(folder)


@namespaces_only
def test_no_abstract_unix_socket_of_the_host_is_reachable():
    name = f"\0spot-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(name)
        server.listen()
        server.settimeout(0.5)
        program = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})\n"
        result = bounded(lambda: run_program(program, timeout=10), 30)
        assert not result.passed and "ConnectionRefusedError" in result.stderr
        with pytest.raises(socket.timeout):
            server.accept()


@namespaces_only
def test_no_connection_reaches_the_host():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.5)
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3).sendall(b'leak')\n"
        result = bounded(lambda: run_program(program, timeout=10), 30)
        assert not result.passed and "unreachable" in result.stderr
        with pytest.raises(socket.timeout):
            server.accept()


@namespaces_only
def test_no_host_path_is_visible_but_the_system_folders():
    program = ("import os\n"
               f"assert not os.path.exists({os.getcwd()!r} + '/spot_utils')\n"
               f"assert not os.path.exists({tempfile.gettempdir()!r} + '/spot_exec_probe')\n"
               "assert not os.path.exists('/run') and not os.path.exists('/var') and not os.path.exists('/home')\n"
               f"assert sorted(os.listdir('/tmp')) == {SANDBOX_LISTING!r}\n"
               "assert sorted(os.listdir('/dev')) == ['full', 'null', 'random', 'shm', 'urandom', 'zero']\n")
    open(os.path.join(tempfile.gettempdir(), "spot_exec_probe"), "w").close()
    try:
        result = run_program(program)
        assert result.passed, result.stderr
    finally:
        os.unlink(os.path.join(tempfile.gettempdir(), "spot_exec_probe"))


@namespaces_only
@pytest.mark.parametrize("how", [
    "import os\nos.remove({target!r})\n",
    "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'rm -f {target}; echo x > {target}.new'], {{}})\nos.wait()\n",
    "import ctypes\nctypes.CDLL(None).system(b'rm -f {target}; echo x > {target}.new')\n",
    "open({target!r}, 'w').write('overwritten')\n",
    "import os\nos.remove('/etc/hostname')\n",
])
def test_files_outside_the_folder_stay_untouched(tmp_path, how):
    if "/etc/hostname" in how and not os.path.exists("/etc/hostname"):
        pytest.skip("no /etc/hostname here")
    target = tmp_path / "keep.txt"
    target.write_text("x")
    hostname = open("/etc/hostname").read() if os.path.exists("/etc/hostname") else None
    bounded(lambda: run_program(how.format(target=str(target)), timeout=10), 30)
    assert target.read_text() == "x" and not (tmp_path / "keep.txt.new").exists()
    assert hostname is None or open("/etc/hostname").read() == hostname


@pytest.mark.parametrize("level", LEVELS)
def test_the_caller_cannot_be_killed(level):
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        program = (f"import os, signal\n"  # never kill(-1): were the confinement broken, it would end everything
                   f"for target in ({victim.pid}, {os.getpid()}):\n"
                   "    try:\n        os.kill(target, signal.SIGKILL)\n    except OSError:\n        pass\n")
        bounded(lambda: run_program(program, timeout=10, isolation=level), 30)
        time.sleep(0.2)
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


@namespaces_only
def test_the_callers_environment_cannot_be_read(monkeypatch):
    secret = f"spot-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("SPOT_SECRET", secret)
    program = ("import os\nseen = []\n"
               "for pid in ['self', str(os.getppid())] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
               "    try:\n        seen.append(open(f'/proc/{pid}/environ', 'rb').read())\n"
               "    except OSError:\n        pass\n"
               f"assert not any({secret.encode()!r} in e for e in seen)\n"
               "assert seen  # its own environment at least was readable: the check ran\n")
    assert bounded(lambda: run_program(program, timeout=10), 30).passed


# --- processes left behind -----------------------------------------------------------------------------------

def survivors(token: str, wait: float = 3.0) -> list[int]:
    """Processes whose command line holds `token`, after up to `wait` seconds for them to go."""
    deadline = time.monotonic() + wait
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(pid))
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def sleeper(token: str) -> str:
    """Program text: fork; the child leaves the session and sleeps for good as `token`."""
    return ("import os, sys\n"
            "if os.fork() == 0:\n    os.setsid()\n"
            f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(1000)', {token!r}])\n")


@pytest.mark.parametrize("level", LEVELS)
def test_timeout_holds_when_a_child_leaves_the_session_and_sleeps(level):
    token = f"spot-test-{uuid.uuid4().hex}"
    program = sleeper(token) + "import time\ntime.sleep(1000)\n"
    result = bounded(lambda: run_program(program, timeout=2, isolation=level), 15)
    assert result.status == "timeout" and result.seconds < 6
    assert not survivors(token)


@pytest.mark.parametrize("level", LEVELS)
def test_processes_left_by_a_finished_program_are_killed(level):
    token = f"spot-test-{uuid.uuid4().hex}"
    result = bounded(lambda: run_program(sleeper(token), timeout=20, isolation=level), 15)
    assert result.seconds < 10 and result.status in ("passed", "failed")  # fork may be refused: both fine
    assert not survivors(token)


# --- which isolation ran -------------------------------------------------------------------------------------

def test_the_session_fallback_runs_only_when_asked_for_by_name(monkeypatch):
    monkeypatch.setattr(execution, "isolation_level", lambda: "session")
    with pytest.raises(RuntimeError, match="isolation='session'"):
        run_program("pass\n")
    assert "only when asked for by name" in isolation()  # what the stage 04 report then prints


def test_the_session_fallback_refuses_to_run_as_root(monkeypatch):
    monkeypatch.setattr(execution.os, "geteuid", lambda: 0)
    monkeypatch.setattr(execution, "_as_nobody", lambda: False)
    with pytest.raises(RuntimeError, match="as root"):
        run_program("pass\n", isolation="session")


@session_only
def test_the_session_fallback_runs_when_asked_for():
    result = run_program("pass\n", isolation="session")
    assert result.passed and result.isolation == "session"
    assert not run_program("import os\nos.fork()\n", isolation="session").passed  # no process may start


def test_the_isolation_that_ran_is_reported():
    assert run_program("pass\n", isolation=isolation_level()).isolation == isolation_level()
    for level in ISOLATION_LEVELS:
        assert f"isolation: {level}" in isolation(level) and "docs/EXECUTION.md" in isolation(level)
    assert isolation_level() != "namespaces" or "isolation: namespaces" in isolation()
    with pytest.raises(ValueError, match="accepted"):
        run_program("pass\n", isolation="none")


def python_for_nobody() -> str | None:
    """A Python the user nobody may run (this one, else the system's), or None."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        try:
            if subprocess.run([candidate, "-I", "-S", "-c", "pass"], user=execution.NOBODY, group=execution.NOBODY,
                              extra_groups=[], capture_output=True, cwd="/", timeout=60).returncode == 0:
                return candidate
        except (OSError, subprocess.SubprocessError):
            pass
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start a caller as the user nobody")
def test_an_unprivileged_caller_gets_the_same_confinement():
    python = python_for_nobody()
    if python is None:
        pytest.skip("no Python here that the user nobody may run")
    folder = tempfile.mkdtemp(prefix="spot_unprivileged_", dir="/tmp")
    try:
        shutil.copy(execution.__file__, folder)
        os.makedirs(os.path.join(folder, "tqdm"))  # used only if that Python has no tqdm: a pass-through bar
        open(os.path.join(folder, "tqdm", "__init__.py"), "w").close()
        with open(os.path.join(folder, "tqdm", "auto.py"), "w") as f:
            f.write("def tqdm(items, **kwargs):\n    return items\n")
        for root, dirs, files in os.walk(folder):
            for name in dirs + files + [""]:
                os.chmod(os.path.join(root, name), 0o755)
        script = ("import os, sys\n"
                  f"sys.path.append({folder!r})\n"
                  "import execution as e\n"
                  "assert os.geteuid() != 0 and e.isolation_level() == 'namespaces'\n"
                  "assert e.run_program('open(\"x\", \"w\").write(\"x\")\\nimport tempfile\\n"
                  "tempfile.NamedTemporaryFile()\\n').passed\n"
                  "forks = 'import os, time\\nfor _ in range(200):\\n    if os.fork() == 0:\\n"
                  "        time.sleep(30)\\n        os._exit(0)\\n'\n"
                  "assert 'Resource temporarily unavailable' in e.run_program(forks, processes=32, timeout=30).stderr\n"
                  "assert not e.run_program('import sys\\nsys.exit(0)\\n').passed\n"
                  "session = e.run_program('pass\\n', isolation='session')\n"
                  "assert session.passed and session.isolation == 'session'\n"
                  "assert not e.run_program('import os\\nos.fork()\\n', isolation='session').passed\n"
                  "assert not e.run_program('import os\\nos._exit(0)\\n', isolation='session').passed\n"
                  "assert 'Read-only file system' in e.run_program('import os\\nos.remove(\"/etc/hostname\")\\n'"
                  ").stderr or not os.path.exists('/etc/hostname')\n")
        done = subprocess.run([python, "-I", "-c", script], user=execution.NOBODY, group=execution.NOBODY,
                              extra_groups=[], cwd="/", capture_output=True, text=True, timeout=120,
                              env={"PATH": os.defpath, "HOME": "/tmp"})
        assert done.returncode == 0, done.stderr[-2000:]
    finally:
        shutil.rmtree(folder)
