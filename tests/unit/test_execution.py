import os

import pytest

from spot_utils.data import eval_sets as evalsets
from spot_utils.measure.execution import humaneval_program, mbpp_program, run_many, run_program


def test_all_canonical_humaneval_solutions_pass():
    problems = evalsets.humaneval()
    assert len(problems) == 164
    results = run_many([humaneval_program(p, p["canonical_solution"]) for p in problems], workers=2, timeout=20)
    failed = [(p["task_id"], r.status, r.stderr[-300:]) for p, r in zip(problems, results) if not r.passed]
    assert not failed


def test_wrong_solution_fails():
    problem = evalsets.humaneval()[0]  # has_close_elements
    result = run_program(humaneval_program(problem, "    return False\n"))
    assert not result.passed and result.status == "failed" and "AssertionError" in result.stderr


def test_syntax_error_fails():
    problem = evalsets.humaneval()[2]
    assert run_program(humaneval_program(problem, "    return (\n")).status == "failed"


def test_infinite_loop_is_stopped_by_the_wall_clock():
    result = run_program("import time\nwhile True:\n    time.sleep(0.01)\n", timeout=1.5)
    assert not result.passed and result.status == "timeout" and result.seconds < 10


def test_busy_loop_is_stopped():
    result = run_program("while True:\n    pass\n", timeout=3, cpu_seconds=1)
    assert not result.passed and result.status in ("cpu", "timeout") and result.seconds < 10


@pytest.mark.parametrize("bomb", ["x = bytearray(8 << 30)\n",
                                  "chunks = []\nwhile True:\n    chunks.append(bytearray(64 << 20))\n"])
def test_memory_bomb_is_stopped(bomb):
    result = run_program(bomb, timeout=20, memory_mb=512)
    assert not result.passed and result.status == "memory"


def test_program_runs_in_a_clean_temporary_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOT_SECRET", "x")
    probe = ("import os, sys\n"
             "assert 'SPOT_SECRET' not in os.environ\n"
             "assert os.getcwd().startswith(os.environ['TMPDIR'])\n"
             "assert os.listdir('.') == ['program.py']\n"
             "assert os.system is None and os.kill is None\n")
    assert run_program(probe).passed
    # the program cannot remove files outside (nor inside) its folder through os/shutil
    target = tmp_path / "keep.txt"
    target.write_text("x")
    assert not run_program(f"import os\nos.remove({str(target)!r})\n").passed
    assert target.exists()
    assert os.getpid() > 0  # the test process is still here


def test_mbpp_program_runs_its_asserts():
    problem = {"test_list": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"], "test_setup_code": ""}
    assert run_program(mbpp_program(problem, "def add(a, b):\n    return a + b\n")).passed
    assert not run_program(mbpp_program(problem, "def add(a, b):\n    return a - b\n")).passed


# --- escapes: each bounded in time, whatever the executor does -----------------------------------------------

import socket
import threading
import time
import uuid

from spot_utils.measure.execution import ISOLATION_LEVELS, isolation, isolation_level

namespaces_only = pytest.mark.skipif(isolation_level() != "namespaces",
                                     reason="no unprivileged user namespaces here: network and file system are not "
                                            "confined (docs/EXECUTION.md)")
LEVELS = [isolation_level()] + [level for level in ISOLATION_LEVELS if level != isolation_level()]


def bounded(fn, seconds):
    """fn()'s result, or a test failure if it has not returned within `seconds` (it is left running)."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert out, f"still running after {seconds} s"
    return out[0]


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
    """Program text: fork (os restored by reload); the child leaves the session and sleeps for good as `token`."""
    return ("import importlib, os, sys\nimportlib.reload(os)\n"
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


@namespaces_only
@pytest.mark.parametrize("how", [
    "import importlib, os\nimportlib.reload(os)\nos.remove({target!r})\n",
    "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'rm -f {target}; echo x > {target}.new'], {{}})\nos.wait()\n",
    "import ctypes\nctypes.CDLL(None).system(b'rm -f {target}; echo x > {target}.new')\n",
    "open({target!r}, 'w').write('overwritten')\n",
])
def test_files_outside_the_folder_stay_untouched(tmp_path, how):
    target = tmp_path / "keep.txt"
    target.write_text("x")
    bounded(lambda: run_program(how.format(target=str(target)), timeout=10), 30)
    assert target.read_text() == "x" and not (tmp_path / "keep.txt.new").exists()


@namespaces_only
def test_no_connection_reaches_the_host(tmp_path):
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
    assert secret in os.environ["SPOT_SECRET"]


def test_isolation_is_stated_for_reports():
    assert "docs/EXECUTION.md" in isolation()
    assert ("no network" in isolation()) == (isolation_level() == "namespaces")
