"""The program the sandbox runs in a separate `python -I -B` process. Standard library only.

It is copied into a fresh temporary folder and started by `reflectevo.verify.sandbox`, never imported
by the pipeline. Steps: read the job (job.json), open the result log, drop root privileges, apply the
resource limits, install an audit hook (no sockets, no writes outside the working folder, no new
processes unless allowed), then run the setup code, the solution and each test in one namespace,
logging progress to the result log so that the parent can tell which test was running when a limit
killed the process.
"""

import ast
import builtins
import io
import json
import os
import resource
import signal
import sys
import traceback

_MAX_REPR = 300


def _count_tasks(uid):
    """Threads/processes (tasks) currently owned by `uid`: RLIMIT_NPROC counts them all."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as handle:
                status = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        uid_line = threads_line = None
        for line in status.splitlines():
            if line.startswith("Uid:"):
                uid_line = line
            elif line.startswith("Threads:"):
                threads_line = line
        if uid_line and uid_line.split()[1] == str(uid):
            count += int(threads_line.split()[1]) if threads_line else 1
    return count


def _drop_privileges(uid, gid):
    if os.geteuid() != 0 or uid is None:
        return
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)


def _limit(name, soft, hard=None):
    kind = getattr(resource, name)
    _, current_hard = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(kind, (soft, hard))


def _apply_limits(limits):
    # Soft limit: SIGXCPU (reported as a CPU-time failure); the hard limit one second later kills.
    _limit("RLIMIT_CPU", int(limits["cpu_seconds"]), int(limits["cpu_seconds"]) + 1)
    _limit("RLIMIT_AS", int(limits["memory_mb"]) * 1024 * 1024)
    _limit("RLIMIT_FSIZE", int(limits["file_size_mb"]) * 1024 * 1024)
    _limit("RLIMIT_NOFILE", int(limits["max_open_files"]))
    _limit("RLIMIT_CORE", 0)
    # RLIMIT_NPROC counts every task of this uid on the machine, so the limit is "what exists now
    # plus the allowance" (root ignores the limit, which is why root is dropped to nobody first).
    try:
        _limit("RLIMIT_NPROC", _count_tasks(os.getuid()) + int(limits["max_processes"]))
    except OSError:
        _limit("RLIMIT_NPROC", int(limits["max_processes"]))


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_PATH_EVENTS = {
    # event -> positions of path arguments that must stay inside the working folder
    "os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.chmod": (0,), "os.chown": (0,),
    "os.rename": (0, 1), "os.link": (0, 1), "os.symlink": (1,), "os.truncate": (0,),
    "os.utime": (0,), "shutil.rmtree": (0,), "shutil.copyfile": (1,), "shutil.copytree": (1,),
    "shutil.move": (0, 1), "os.chflags": (0,), "os.mkfifo": (0,), "os.mknod": (0,),
}
_BLOCKED_IMPORTS = {"_posixsubprocess"}  # fork_exec raises no audit event of its own
_PROCESS_EVENTS = {"os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
                   "subprocess.Popen", "os.kill", "os.killpg", "pty.spawn"}


def _install_guard(workdir, allow_processes):
    root = os.path.realpath(workdir)
    inside_prefix = root + os.sep
    realpath, fspath, isdir = os.path.realpath, os.fspath, os.path.isdir
    try:
        own_pid = os.readlink("/proc/self")  # as /proc names it (a PID namespace renumbers getpid)
    except OSError:
        own_pid = str(os.getpid())

    def inside(path):
        if isinstance(path, int):
            return True  # an already-open descriptor
        try:
            path = fspath(path)
        except TypeError:
            return True
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        if path in ("/dev/null", "/dev/stdout", "/dev/stderr"):
            return True
        full = realpath(path)  # relative to the current folder: after os.chdir too
        return full == root or full.startswith(inside_prefix)

    def may_read(path):
        """Reading is free, except other processes' /proc entries (their environment holds secrets)
        and folders outside: a folder's descriptor would let dir_fd= writes escape the path checks."""
        if isinstance(path, int) or inside(path):
            return True
        try:
            full = realpath(fspath(path) if not isinstance(path, bytes) else path.decode("utf-8", "surrogateescape"))
        except TypeError:
            return True
        parts = full.split(os.sep)
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != own_pid:
            return False
        return not isdir(full)

    def guard(event, args):
        if event.startswith("socket."):
            raise PermissionError("network access is disabled in the sandbox")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing and not inside(path):
                raise PermissionError(f"writing outside the sandbox folder is not allowed: {path!r}")
            if not writing and not may_read(path):
                raise PermissionError(f"opening {path!r} is not allowed in the sandbox")
            return
        if event == "sqlite3.connect":  # SQLite opens its files in C, without an `open` event
            database = fspath(args[0]) if args and not isinstance(args[0], int) else ":memory:"
            database = database.decode() if isinstance(database, bytes) else database
            name = database[5:].split("?")[0] if database.startswith("file:") else database
            if name not in ("", ":memory:") and not inside(name):
                raise PermissionError(f"databases outside the sandbox folder are not allowed: {database!r}")
            return
        positions = _PATH_EVENTS.get(event)
        if positions is not None:
            for position in positions:
                if position < len(args) and not inside(args[position]):
                    raise PermissionError(f"{event} outside the sandbox folder is not allowed: "
                                          f"{args[position]!r}")
            return
        if not allow_processes and (event in _PROCESS_EVENTS or (
                event == "import" and args and args[0] in _BLOCKED_IMPORTS)):
            raise PermissionError(f"{event} {args[0] if event == 'import' else ''}".rstrip()
                                  + " is not allowed in the sandbox (no new processes)")
        if event.startswith("ctypes.") and event != "ctypes.dlopen":
            # Importing ctypes is fine (numpy does); looking up or calling native functions is not.
            raise PermissionError(f"{event} (native code through ctypes) is not allowed in the sandbox")

    sys.addaudithook(guard)
    if not allow_processes:
        # Signals through a pidfd raise no audit event: without a PID namespace they could reach the
        # pipeline itself, so these functions are taken away before the user code runs.
        import posix
        import _signal
        for module, name in ((os, "pidfd_open"), (posix, "pidfd_open"), (signal, "pidfd_send_signal"),
                             (_signal, "pidfd_send_signal")):
            if hasattr(module, name):
                delattr(module, name)


class CPUTimeLimitExceeded(Exception):
    """Raised in the user code when the CPU-time soft limit (SIGXCPU) is reached."""


def _on_sigxcpu(_signum, _frame):
    raise CPUTimeLimitExceeded("CPU time limit exceeded")


def _short(value):
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ in user code
        text = f"<unprintable {type(value).__name__}: {exc}>"
    return text if len(text) <= _MAX_REPR else text[:_MAX_REPR] + "..."


def _user_traceback(exc):
    """The traceback without the runner's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename != __file__]
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


def _actual_value(test, namespace):
    """For `assert <expr> == <expected>`, the value <expr> actually had (as text), else None."""
    try:
        tree = ast.parse(test)
        node = tree.body[0] if len(tree.body) == 1 else None
        if not isinstance(node, ast.Assert) or not isinstance(node.test, ast.Compare):
            return None
        if len(node.test.ops) != 1 or not isinstance(node.test.ops[0], (ast.Eq, ast.Is)):
            return None
        left = ast.Expression(node.test.left)
        value = eval(compile(left, "<test>", "eval"), namespace)  # noqa: S307 - inside the sandbox
        return f"{ast.unparse(node.test.left)} returned {_short(value)}"
    except BaseException:  # noqa: BLE001
        return None


def main():
    with open("job.json", encoding="utf-8") as handle:
        job = json.load(handle)
    log = io.open(job["result_path"], "w", encoding="utf-8", buffering=1)

    def record(**fields):
        log.write(json.dumps(fields) + "\n")
        log.flush()

    workdir = job["workdir"]
    os.chdir(workdir)
    _drop_privileges(job.get("uid"), job.get("gid"))
    _apply_limits(job["limits"])
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    _install_guard(workdir, job["limits"].get("allow_processes", False))
    sys.argv = ["solution.py"]
    sys.path.insert(0, workdir)
    namespace = {"__name__": "__solution__", "__builtins__": builtins}

    def run(stage, source, filename, index=None):
        record(event="start", stage=stage, index=index)
        try:
            code = compile(source, filename, "exec")
        except SyntaxError as exc:
            record(event="fail", stage=stage, index=index, kind="SyntaxError",
                   message="".join(traceback.format_exception_only(type(exc), exc)).rstrip())
            return False
        try:
            exec(code, namespace)  # noqa: S102 - this process is the sandbox
        except SystemExit as exc:
            record(event="fail", stage=stage, index=index, kind="SystemExit",
                   message=f"the code called exit({exc.code!r})")
            return False
        except BaseException as exc:  # noqa: BLE001
            actual = _actual_value(source, namespace) if stage == "test" else None
            record(event="fail", stage=stage, index=index, kind=type(exc).__name__,
                   message=_user_traceback(exc), actual=actual)
            return False
        return True

    # The setup code runs first. Fixtures that build objects from the solution's own classes (MBPP
    # 367 and 927 build trees of the solution's `Node`) fail with NameError there; they run again
    # once the solution is defined, before the tests.
    setup, ok, deferred = job["setup"], True, False
    if setup.strip():
        try:
            exec(compile(setup, "setup.py", "exec"), namespace)  # noqa: S102
        except NameError:
            deferred = True
        except BaseException:  # noqa: BLE001 - reported by run() below with the full story
            ok = run("setup", setup, "setup.py")
    ok = ok and run("solution", job["code"], "solution.py")
    if ok and deferred:
        ok = run("setup", setup, "setup.py")
    passed = 0
    if ok:
        for index, test in enumerate(job["tests"]):
            if not run("test", test, f"test_{index + 1}.py", index):
                break
            passed += 1
    record(event="done", passed=passed, total=len(job["tests"]))
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


if __name__ == "__main__":
    main()
