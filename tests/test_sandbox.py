"""The code sandbox: hostile programs fail cleanly, the run goes on, nothing leaks."""

import os
import time
from pathlib import Path

import pytest

from reflectevo.verify.sandbox import Job, Limits, isolation, run_many, run_tests

FAST = Limits(cpu_seconds=1, wall_seconds=4, memory_mb=512, file_size_mb=2)
TEST = ["assert f(1) == 2"]

HOSTILE = {
    "infinite_loop": "def f(x):\n    while True:\n        pass",
    "slow_big_number": "def f(x):\n    return 10 ** (10 ** 10)",
    "sleep_forever": "import time\ndef f(x):\n    time.sleep(1000)",
    "allocate_10gb": "def f(x):\n    block = bytearray(10 * 1024 ** 3)\n    return 2",
    "allocate_10gb_list": "def f(x):\n    block = [0] * (10 ** 10)\n    return 2",
    "fork_bomb": "import os\ndef f(x):\n    while True:\n        os.fork()",
    "subprocess": "import subprocess\ndef f(x):\n    subprocess.run(['sh', '-c', 'echo hi'])\n    return 2",
    "os_system": "import os\ndef f(x):\n    os.system('touch /tmp/reflectevo-hostile')\n    return 2",
    "print_forever": "def f(x):\n    while True:\n        print('spam' * 100)",
    "write_big_file": "def f(x):\n    with open('big.bin', 'wb') as h:\n        while True:\n            h.write(b'x' * 65536)",
    "socket": "import socket\ndef f(x):\n    s = socket.socket()\n    s.connect(('1.1.1.1', 80))\n    return 2",
    "dns": "import socket\ndef f(x):\n    socket.getaddrinfo('example.com', 80)\n    return 2",
    "urllib": "import urllib.request\ndef f(x):\n    urllib.request.urlopen('http://example.com', timeout=2)\n    return 2",
    "ctypes_libc": "import ctypes\ndef f(x):\n    ctypes.CDLL(None).fork()\n    return 2",
    "exit_early": "import os\nos._exit(0)\ndef f(x):\n    return 2",
    "sys_exit": "import sys\nsys.exit(0)",
    "raise_limits": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))\ndef f(x):\n    return 2",
    "recursion": "def f(x):\n    return f(x)",
}


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    cases = dict(HOSTILE)
    cases["write_outside"] = (f"def f(x):\n    open({str(outside / 'pwned.txt')!r}, 'w').write('x')\n"
                              f"    return 2")
    cases["remove_outside"] = f"import os\ndef f(x):\n    os.remove({str(outside / 'keep.txt')!r})\n    return 2"
    (outside / "keep.txt").write_text("keep")
    names = list(cases)
    started = time.monotonic()
    results = run_many([Job(cases[n], tuple(TEST)) for n in names], limits=FAST, workers=6)
    return dict(zip(names, results)), outside, time.monotonic() - started


@pytest.mark.parametrize("name", [*HOSTILE, "write_outside", "remove_outside"])
def test_hostile_code_fails_cleanly(hostile_results, name):
    results, _, _ = hostile_results
    result = results[name]
    assert not result.passed
    assert result.feedback and result.feedback != "passed"
    assert result.seconds < FAST.wall_seconds + 3


def test_hostile_statuses(hostile_results):
    results, outside, elapsed = hostile_results
    # six sandboxes share two cores here, so a CPU-bound one may hit the wall clock first
    assert results["infinite_loop"].status in ("cpu_limit", "timeout")
    assert results["slow_big_number"].status in ("cpu_limit", "timeout")
    assert results["sleep_forever"].status == "timeout"
    assert "Time limit exceeded" in results["sleep_forever"].feedback
    assert results["allocate_10gb"].status == "memory_limit"
    assert "MemoryError" in results["allocate_10gb"].feedback
    assert "not allowed" in results["fork_bomb"].feedback
    assert "File too large" in results["print_forever"].feedback or results["print_forever"].status == "output_limit"
    assert "network access is disabled" in results["socket"].feedback
    assert "exited before the tests finished" in results["exit_early"].feedback
    assert "not allowed to raise" in results["raise_limits"].feedback
    assert "RecursionError" in results["recursion"].feedback
    assert not (outside / "pwned.txt").exists()
    assert (outside / "keep.txt").read_text() == "keep"
    assert not Path("/tmp/reflectevo-hostile").exists()
    assert elapsed < 30


def test_environment_is_stripped_and_workdir_removed(monkeypatch):
    monkeypatch.setenv("REFLECTEVO_TEST_SECRET", "hunter2")
    code = "import os\ndef f(x):\n    return (sorted(os.environ), os.getcwd(), os.environ['HOME'])"
    result = run_tests(code, ["assert f(1) == 2"], limits=FAST)
    assert result.status == "failed"
    assert "REFLECTEVO_TEST_SECRET" not in result.feedback and "hunter2" not in result.feedback
    assert "reflectevo-sandbox-" in result.feedback
    cwd = [part for part in result.feedback.split("'") if "reflectevo-sandbox-" in part][0]
    assert not os.path.exists(cwd), "the temporary working folder must be removed"


def test_cpu_limit_is_reported_as_such():
    result = run_tests("def f(x):\n    while True:\n        pass", TEST,
                       limits=Limits(cpu_seconds=1, wall_seconds=8))
    assert result.status == "cpu_limit" and "CPU time limit exceeded" in result.feedback
    assert "test 1" in result.feedback.lower()  # "Test 1 of 1 failed: ..." or "... while running test 1: ..."


def test_feedback_shows_failing_assert_and_actual_value():
    result = run_tests("def f(x):\n    return x", ["assert f(1) == 1", "assert f(2) == 3"], limits=FAST)
    assert result.status == "failed" and result.tests_passed == 1 and result.tests_total == 2
    assert "Test 2 of 2 failed: assert f(2) == 3" in result.feedback
    assert "f(2) returned 2" in result.feedback


def test_traceback_feedback_without_runner_frames():
    result = run_tests("def f(x):\n    return undefined_name", TEST, limits=FAST)
    # the error and the line of the model's code that raised it, not the harness's frames
    assert "NameError: name 'undefined_name' is not defined" in result.feedback
    assert "raised at line 2 of your code: return undefined_name" in result.feedback
    assert "runner.py" not in result.feedback and "Traceback" not in result.feedback


def test_syntax_error_and_setup_order():
    assert run_tests("def f(x)\n    return 2", TEST, limits=FAST).status == "syntax_error"
    # setup runs first (imports the solution may use) ...
    assert run_tests("def f(x):\n    return int(sqrt(x)) + 1", TEST, setup="from math import sqrt",
                     limits=FAST).passed
    # ... and fixtures built from the solution's own classes run once it is defined (MBPP 367, 927)
    code = "class Node:\n    def __init__(self, v):\n        self.v = v\ndef f(n):\n    return n.v + 1"
    assert run_tests(code, ["assert f(root) == 2"], setup="root = Node(1)", limits=FAST).passed


def test_files_inside_the_workdir_are_allowed():
    code = "def f(x):\n    open('a.txt', 'w').write('ab')\n    return len(open('a.txt').read())"
    assert run_tests(code, TEST, limits=FAST).passed


def test_numpy_still_imports():
    pytest.importorskip("numpy")
    assert run_tests("import numpy as np\ndef f(x):\n    return int(np.array([x]).sum()) + 1", TEST,
                     limits=FAST).passed


def test_isolation_is_reported():
    mode = isolation()
    assert mode.network in ("namespace", "audit-hook")
    assert run_tests("def f(x):\n    return 2", TEST, limits=FAST).isolation == mode.network


@pytest.mark.skipif(not isolation().process_limit, reason="RLIMIT_NPROC does not bind uid 0 (no nobody drop here)")
def test_fork_bomb_stopped_by_the_process_limit():
    limits = Limits(cpu_seconds=2, wall_seconds=5, allow_processes=True, max_processes=8)
    code = "import os\ndef f(x):\n    while True:\n        os.fork()"
    result = run_tests(code, TEST, limits=limits)
    assert not result.passed
    # the machine is still usable
    assert run_tests("def f(x):\n    return 2", TEST, limits=FAST).passed
