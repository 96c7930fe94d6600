import os

import pytest

from spot_utils import evalsets
from spot_utils.execution import humaneval_program, mbpp_program, run_many, run_program


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
