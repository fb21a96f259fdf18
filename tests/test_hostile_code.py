"""Hostile code through the sandbox, the full list of issue 9, each with its verdict; the pipeline unharmed.

The programs run from a separate "pipeline" process (the same `run_many` that `Task.verify_many`
uses), so a program that managed to signal or starve its parent would show as a dead pipeline
rather than kill pytest. The pipeline holds a secret in its environment, listens on a local TCP port
and owns a stand-in home folder; afterwards the test checks that no program got the secret, connected
or wrote anything outside its sandbox, and that the pipeline still judges a correct program as passed.

Signal, environment, home and network cases also run a second time with namespaces switched off
(`REFLECTEVO_SANDBOX_NO_NAMESPACES=1`, the mode of machines without `unshare`), where only the audit
hook and the runner stand between the code and the pipeline.

Cases that tests/test_sandbox.py already proves are not run again: `ALREADY_PROVEN` names them.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SECRET = "sk-reflectevo-hostile-7f3a9"
TEST = ("assert f(1) == 2",)

# (issue category, case, program, accepted statuses, text the feedback must hold or None)
# {home}, {port}, {pid} and {uid_home_file} are filled in by the pipeline. Every case must fail:
# a program that "passes" a hostile case has escaped.
CASES = [
    ("fork bomb", "multiprocessing_pool",
     "import multiprocessing\ndef f(x):\n    with multiprocessing.Pool(64) as p:\n        return sum(p.map(abs, range(9)))",
     {"failed", "error"}, "not allowed"),
    ("fork bomb", "thread_bomb",
     "import threading, time\ndef f(x):\n    while True:\n        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
     {"failed", "error", "memory_limit", "timeout", "cpu_limit"}, None),
    ("memory bomb", "doubling_bytes",
     "def f(x):\n    s = b'x'\n    while True:\n        s += s",
     {"memory_limit", "timeout", "cpu_limit"}, None),
    ("endless output", "stderr_flood",
     "import sys\ndef f(x):\n    while True:\n        sys.stderr.write('e' * 65536)",
     {"output_limit", "failed", "timeout", "cpu_limit"}, None),
    ("endless output", "one_endless_line",
     "import sys\ndef f(x):\n    while True:\n        sys.stdout.write('x' * 65536)",
     {"output_limit", "failed", "timeout", "cpu_limit"}, None),
    ("environment secrets", "os_environ",
     "import os\ndef f(x):\n    return dict(os.environ)",
     {"failed"}, "returned"),
    ("environment secrets", "parent_proc_environ",
     "import os\ndef f(x):\n    return open(f'/proc/{{os.getppid()}}/environ', 'rb').read()",
     {"failed"}, None),
    ("environment secrets", "pipeline_proc_environ",
     "def f(x):\n    return open('/proc/{pid}/environ', 'rb').read()",
     {"failed"}, None),
    ("environment secrets", "scan_all_proc_environ",
     "import os\ndef f(x):\n    found = []\n    for p in os.listdir('/proc'):\n        try:\n"
     "            found.append(open(f'/proc/{{p}}/environ', 'rb').read())\n        except Exception:\n"
     "            pass\n    return [e for e in found if b'REFLECTEVO' in e]",
     {"failed"}, None),
    ("home directory", "write_home_file",
     "def f(x):\n    open('{home}/pwned.txt', 'w').write('x')\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "write_real_home_of_uid",
     "import os, pwd\ndef f(x):\n    home = pwd.getpwuid(os.getuid()).pw_dir\n"
     "    open(os.path.join(home, '{uid_home_file}'), 'w').write('x')\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "chdir_then_write",
     "import os\ndef f(x):\n    os.chdir('{home}')\n    open('pwned.txt', 'w').write('x')\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "dir_fd_write",
     "import os\ndef f(x):\n    d = os.open('{home}', os.O_RDONLY)\n"
     "    os.close(os.open('pwned.txt', os.O_WRONLY | os.O_CREAT, dir_fd=d))\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "sqlite_file",
     "import sqlite3\ndef f(x):\n    db = sqlite3.connect('{home}/pwned.db')\n    db.execute('create table t(a)')\n"
     "    db.commit()\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "rename_out",
     "import os\ndef f(x):\n    open('a', 'w').write('x')\n    os.replace('a', '{home}/pwned.txt')\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "symlink_out",
     "import os\ndef f(x):\n    os.symlink('{home}/pwned.txt', 'link')\n    open('link', 'w').write('x')\n    return 2",
     {"failed"}, "not allowed"),
    ("home directory", "delete_home_file",
     "import os\ndef f(x):\n    os.remove('{home}/keep.txt')\n    return 2",
     {"failed"}, "not allowed"),
    ("network", "tcp_to_local_listener",
     "import socket\ndef f(x):\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'pwned')\n    return 2",
     {"failed"}, "network access is disabled"),
    ("network", "http_to_local_listener",
     "import urllib.request\ndef f(x):\n    urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2)\n    return 2",
     {"failed"}, None),
    ("network", "raw_socket_module",
     "import _socket\ndef f(x):\n    s = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)\n"
     "    s.connect(('127.0.0.1', {port}))\n    return 2",
     {"failed"}, "network access is disabled"),
    ("signals to the parent", "kill_parent_sigkill",
     "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 2",
     {"failed"}, None),
    ("signals to the parent", "kill_parent_sigterm",
     "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGTERM)\n    return 2",
     {"failed"}, None),
    ("signals to the parent", "kill_pipeline_pid",
     "import os, signal\ndef f(x):\n    os.kill({pid}, signal.SIGKILL)\n    return 2",
     {"failed"}, "not allowed"),
    ("signals to the parent", "killpg_pipeline",
     "import os, signal\ndef f(x):\n    os.killpg(os.getpgid({pid}), signal.SIGKILL)\n    return 2",
     {"failed"}, None),
    ("signals to the parent", "pidfd_signal",
     "import os, signal\ndef f(x):\n    signal.pidfd_send_signal(os.pidfd_open({pid}), signal.SIGKILL)\n    return 2",
     {"failed"}, None),
    ("signals to the parent", "kill_command",
     "import subprocess\ndef f(x):\n    subprocess.run(['kill', '-9', '{pid}'])\n    return 2",
     {"failed", "error"}, "not allowed"),
    ("very deep recursion", "unbounded_recursion_limit",
     "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(x):\n    return f(x + 1)",
     {"memory_limit", "crashed", "cpu_limit", "timeout", "failed"}, None),
    ("very deep recursion", "deeply_nested_repr",
     "import sys\nsys.setrecursionlimit(10 ** 9)\ndef f(x):\n    v = []\n    for _ in range(10 ** 6):\n"
     "        v = [v]\n    return repr(v)",
     {"memory_limit", "crashed", "failed", "cpu_limit", "timeout"}, None),
    ("huge files", "sparse_terabyte",
     "def f(x):\n    with open('big', 'wb') as h:\n        h.seek(10 ** 12)\n        h.write(b'x')\n    return 2",
     {"output_limit", "failed", "crashed"}, None),
    ("huge files", "truncate_terabyte",
     "import os\ndef f(x):\n    open('big', 'wb').close()\n    os.truncate('big', 10 ** 12)\n    return 2",
     {"failed", "output_limit"}, None),
    ("huge files", "many_big_files",
     "def f(x):\n    i = 0\n    while True:\n        open(f'f{{i}}', 'wb').write(b'x' * 2 ** 20)\n        i += 1",
     {"timeout", "cpu_limit"}, None),  # each file under the size limit: only time bounds the total
]

# Cases that only matter where the pipeline is reachable: rerun without namespaces.
MODE_SENSITIVE = {"environment secrets", "home directory", "network", "signals to the parent"}

# What tests/test_sandbox.py already proves (case name in its HOSTILE table, or a test function).
ALREADY_PROVEN = {
    "fork bomb": ["fork_bomb", "subprocess", "os_system", "ctypes_libc", "test_fork_bomb_stopped_by_the_process_limit"],
    "memory bomb": ["allocate_10gb", "allocate_10gb_list"],
    "endless output": ["print_forever"],
    "environment secrets": ["test_environment_is_stripped_and_workdir_removed"],
    "home directory": ["write_outside", "remove_outside"],
    "network": ["socket", "dns", "urllib"],
    "very deep recursion": ["recursion"],
    "huge files": ["write_big_file"],
    "limits": ["raise_limits", "infinite_loop", "sleep_forever", "slow_big_number"],
}

PIPELINE = textwrap.dedent(r"""
    import json, os, socket, sys, threading
    from reflectevo.verify.sandbox import Job, Limits, isolation, run_many

    cases, home, uid_home_file, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    connections = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)

    def accept():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            connections.append(conn.recv(100))

    threading.Thread(target=accept, daemon=True).start()
    fill = {"home": home, "port": listener.getsockname()[1], "pid": os.getpid(), "uid_home_file": uid_home_file}
    limits = Limits(cpu_seconds=1, wall_seconds=4, memory_mb=512, file_size_mb=2)
    names = list(cases)
    results = run_many([Job(cases[n].format(**fill), ("assert f(1) == 2",)) for n in names], limits=limits,
                       workers=2)
    # Still alive, still judging: a correct program passes after all of that.
    after = run_many([Job("def f(x):\n    return x + 1", ("assert f(1) == 2",))], limits=limits)[0]
    with open(out, "w") as handle:
        json.dump({"results": {n: r.to_dict() for n, r in zip(names, results)}, "after": after.to_dict(),
                   "connections": len(connections), "isolation": isolation().describe()}, handle)
""")


def run_pipeline(tmp_path: Path, cases: dict[str, str], no_namespaces: bool) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep.txt").write_text("keep")
    uid_home_file = f"reflectevo-hostile-{os.getpid()}-{tmp_path.name}.txt"
    env = {**os.environ, "REFLECTEVO_TEST_SECRET": SECRET, "HOME": str(home)}
    if no_namespaces:
        env["REFLECTEVO_SANDBOX_NO_NAMESPACES"] = "1"
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-c", PIPELINE, json.dumps(cases), str(home), uid_home_file, str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    real_home_file = Path(pwd.getpwuid(os.getuid()).pw_dir) / uid_home_file
    escaped_to_real_home = real_home_file.exists()
    real_home_file.unlink(missing_ok=True)
    assert proc.returncode == 0, f"the pipeline died (status {proc.returncode}): {proc.stderr[-2000:]}"
    data = json.loads(out.read_text())
    data["home"] = home
    data["escaped_to_real_home"] = escaped_to_real_home
    return data


def check_contained(data: dict, table: list) -> None:
    results = data["results"]
    assert data["after"]["status"] == "passed", "the pipeline no longer judges correct code"
    assert data["connections"] == 0, "a sandboxed program reached the pipeline's TCP port"
    assert sorted(p.name for p in data["home"].iterdir()) == ["keep.txt"], "something was written to home"
    assert (data["home"] / "keep.txt").read_text() == "keep"
    assert not data["escaped_to_real_home"], "a sandboxed program wrote into the real home folder"
    wrong = []
    for category, name, _, statuses, needle in table:
        result = results[name]
        shown = json.dumps(result)
        assert SECRET not in shown and "REFLECTEVO_TEST_SECRET" not in shown, f"{name}: the secret leaked"
        assert not result["passed"], f"{category}/{name} passed: it escaped ({result['feedback']})"
        assert result["seconds"] < 4 + 5, f"{name} outlived the wall-clock limit"
        if result["status"] not in statuses or (needle and needle not in result["feedback"]):
            wrong.append(f"{category}/{name}: {result['status']}: {result['feedback'][-300:]}")
    assert not wrong, "unexpected verdicts:\n" + "\n".join(wrong)
    leftovers = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("reflectevo-sandbox-*")
                 if (p / "work" / "f0").exists() or (p / "work" / "big").exists()]
    assert not leftovers, f"sandbox folders were not removed: {leftovers}"


def test_hostile_code_is_contained(tmp_path):
    data = run_pipeline(tmp_path, {name: code for _, name, code, _, _ in CASES}, no_namespaces=False)
    check_contained(data, CASES)
    # The categories are all covered, here or in test_sandbox.py.
    categories = {c[0] for c in CASES}
    assert categories >= {"fork bomb", "memory bomb", "endless output", "environment secrets", "home directory",
                          "network", "signals to the parent", "very deep recursion", "huge files"}


def test_hostile_code_is_contained_without_namespaces(tmp_path):
    table = [c for c in CASES if c[0] in MODE_SENSITIVE]
    data = run_pipeline(tmp_path, {name: code for _, name, code, _, _ in table}, no_namespaces=True)
    assert "pid namespace: no" in data["isolation"]
    check_contained(data, table)


def test_already_proven_cases_still_exist():
    import test_sandbox

    names = set(test_sandbox.HOSTILE) | {"write_outside", "remove_outside"} | {
        n for n in dir(test_sandbox) if n.startswith("test_")}
    missing = [case for cases in ALREADY_PROVEN.values() for case in cases if case not in names]
    assert not missing, f"tests/test_sandbox.py no longer proves {missing}: add them here"


@pytest.mark.parametrize("category, name", [(c[0], c[1]) for c in CASES])
def test_table_is_well_formed(category, name):
    # Each program compiles once filled in (a typo would "fail" for the wrong reason and prove nothing).
    case = next(c for c in CASES if c[1] == name)
    compile(case[2].format(home="/h", port=1, pid=1, uid_home_file="x"), name, "exec")
