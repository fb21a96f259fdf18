"""The program the sandbox runs in a separate `python -I -B` process. Standard library only.

It is copied into a fresh temporary folder and started by `reflectevo.verify.sandbox`, never imported
by the pipeline. Steps: read the job (job.json), open the result log, drop root privileges, apply the
resource limits, install an audit hook (no sockets, no writes outside the working folder, no new
processes unless allowed), then run the setup code, the solution and each test in one namespace,
logging progress to the result log so that the parent can tell which test was running when a limit
killed the process.

A failure is described for feedback, not dumped: the asserts of the tests and setup code are rewritten
(line numbers kept) so that the values they compare are captured as they run (nothing is evaluated
twice); the innermost line of the tests that was running (inside a check function too), those values,
and for an exception its type, message and the line of the solution that raised it are logged as
short fields (long texts as their two ends and length), which sandbox.py fits into a few lines.
"""

import ast
import builtins
import io
import json
import os
import resource
import signal
import sys

_PIECE = 1000  # characters kept from each end of a long value or line (sandbox.py clips them further)


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


_SEEN = "__reflectevo_seen__"  # the capture hook the rewritten asserts call (a dunder: never name-mangled)


def _piece(text):
    """A long text as its ends and its length (sandbox.py clips it once, to fit the feedback)."""
    text = " ".join(str(text).splitlines())
    if len(text) <= 2 * _PIECE:
        return {"head": text, "tail": "", "length": len(text)}
    return {"head": text[:_PIECE], "tail": text[-_PIECE:], "length": len(text)}


def _short_name(text, limit=60):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _repr(value):
    try:
        return repr(value)
    except BaseException as exc:  # noqa: BLE001 - a broken __repr__ in user code
        return f"<unprintable {type(value).__name__}: {type(exc).__name__}>"


class _Seen:
    """Values the rewritten asserts of the tests saw, for the assert that ran last."""

    def __init__(self):
        self.current, self.values = None, {}

    def begin(self, assert_id):
        self.current, self.values = assert_id, {}

    def __call__(self, assert_id, slot, value):
        if assert_id == self.current:
            self.values[slot] = value
        return value


def _literal(node):
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _user_calls(node):
    """The outermost calls of non-builtin names in `node` (the tested functions: f(...), candidate(...))."""
    found = []

    def walk(item):
        if isinstance(item, ast.Call) and isinstance(item.func, ast.Name) and not hasattr(builtins, item.func.id):
            found.append(item)
            return
        for child in ast.iter_child_nodes(item):
            walk(child)

    walk(node)
    return found


class _Rewrite(ast.NodeTransformer):
    """Rewrites each `assert` so that the values it compares are captured as it runs, without running
    anything twice: `assert f(x) == y` becomes `seen.begin(k); assert seen(k, 0, f(x)) == seen(k, 1, y)`.
    Line numbers stay those of the original source."""

    def __init__(self, filename, source, registry):
        self.filename, self.source = filename, source
        self.asserts = registry  # every rewritten assert of the run: its id is its index here

    def visit_Assert(self, node):
        test = node.test
        subjects = []  # (slot kind, node): "value" is what the code returned, "expected" the other side
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            subjects.append(("value", test.left))
            if not _literal(test.comparators[0]):
                subjects.append(("expected", test.comparators[0]))
        else:
            inner = test.operand if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) else test
            calls = _user_calls(inner)[:2]
            if calls:
                subjects += [("value", call) for call in calls]
            elif isinstance(inner, (ast.Name, ast.Attribute, ast.Subscript)):
                subjects.append(("value", inner))
        assert_id = len(self.asserts)
        names = sorted({n.id for n in ast.walk(test) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
                        and not hasattr(builtins, n.id)})
        self.asserts.append({"file": self.filename, "line": node.lineno, "end": node.end_lineno or node.lineno,
                             "names": names,
                             "slots": [(kind if kind == "expected" or isinstance(sub, ast.Call) else "is",
                                        self._text(sub)) for kind, sub in subjects]})
        targets = {id(sub): slot for slot, (_, sub) in enumerate(subjects)}
        node.test = _Wrap(targets, assert_id).visit(test)
        begin = ast.Expr(ast.Call(ast.Attribute(ast.Name(_SEEN, ast.Load()), "begin", ast.Load()),
                                  [ast.Constant(assert_id)], []))
        return [ast.copy_location(begin, node), node]


    def _text(self, node):
        """The expression as the test wrote it (as the model saw it), else as ast prints it."""
        segment = ast.get_source_segment(self.source, node)
        return " ".join(line.strip() for line in segment.splitlines()) if segment else ast.unparse(node)


class _Wrap(ast.NodeTransformer):
    def __init__(self, targets, assert_id):
        self.targets, self.assert_id = targets, assert_id

    def visit(self, node):
        slot = self.targets.get(id(node))
        if slot is None:
            return super().visit(node)
        call = ast.Call(ast.Name(_SEEN, ast.Load()), [ast.Constant(self.assert_id), ast.Constant(slot), node], [])
        return ast.copy_location(call, node)


def _compile_checked(source, filename, registry):
    """Compile test (or setup) code with its asserts rewritten; the plain source where rewriting fails."""
    tree = ast.parse(source, filename)  # a SyntaxError is the caller's to report
    try:
        tree = ast.fix_missing_locations(_Rewrite(filename, source, registry).visit(tree))
        return compile(tree, filename, "exec")
    except Exception:  # noqa: BLE001 - an AST this rewriter does not handle: run it as written
        return compile(source, filename, "exec")


def _line(source, number):
    lines = source.splitlines()
    return lines[number - 1].strip() if 0 < number <= len(lines) else ""


def _error_text(exc):
    """`Type: message` on one line (a SyntaxError: its short message; the line is reported apart)."""
    name = type(exc).__name__
    try:
        message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    except BaseException:  # noqa: BLE001 - a broken __str__ in user code
        message = "<unprintable message>"
    message = " ".join(str(message).split())
    return _piece(f"{name}: {message}" if message else name)


def _explain(exc, sources, asserts, seen):
    """What went wrong, in a few short fields: the innermost line of the tests (or setup) that was
    running, the values an assert saw, and for an exception the line of the solution that raised."""
    entries = []
    tb = exc.__traceback__
    while tb is not None:
        entries.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    entries = [(frame, line) for frame, line in entries if frame.f_code.co_filename != __file__]
    info = {"error": _error_text(exc)}
    harness = [(f, n) for f, n in entries if f.f_code.co_filename in sources and f.f_code.co_filename != "solution.py"]
    if harness:
        frame, number = harness[-1]
        filename = frame.f_code.co_filename
        info.update(file=filename, line=number, text=_piece(_line(sources[filename], number)),
                    function=_short_name(frame.f_code.co_name, 40) if frame.f_code.co_name != "<module>" else None)
    solution = [(f, n) for f, n in entries if f.f_code.co_filename == "solution.py"]
    deepest = entries[-1][0].f_code.co_filename if entries else None
    if isinstance(exc, AssertionError) and harness and deepest == info["file"]:
        frame, number = harness[-1]
        current = asserts[seen.current] if isinstance(seen.current, int) and seen.current < len(asserts) else None
        if current and current["file"] == info["file"] and current["line"] <= number <= current["end"]:
            lines = sources[info["file"]].splitlines()[current["line"] - 1:current["end"]]
            info["text"] = _piece(" ".join(line.strip() for line in lines))  # the whole assert statement
            values = [{"kind": kind, "expr": _short_name(text), "repr": _piece(_repr(seen.values[slot]))}
                      for slot, (kind, text) in enumerate(current["slots"]) if slot in seen.values]
            scope = {**frame.f_globals, **frame.f_locals}
            shown = {text for _, text in current["slots"]}
            names = [{"name": _short_name(name, 30), "repr": _piece(_repr(scope[name]))} for name in current["names"]
                     if name in scope and name not in shown and not callable(scope[name])
                     and type(scope[name]).__name__ != "module"]
            info.update(values=values, names=names[:3])
        if exc.args:
            info["assert_message"] = _piece(_repr(exc.args[0]) if not isinstance(exc.args[0], str) else exc.args[0])
    elif solution:
        frame, number = solution[-1]
        info.update(raised_line=number, raised_text=_piece(_line(sources["solution.py"], number)))
    elif isinstance(exc, SyntaxError) and exc.lineno:
        if exc.filename == "solution.py":
            info.update(raised_line=exc.lineno, raised_text=_piece((exc.text or "").strip()))
        else:
            info.update(file=exc.filename, line=exc.lineno, text=_piece((exc.text or "").strip()))
    return info


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

    sources = {"solution.py": job["code"], "setup.py": job["setup"]}
    asserts = []  # what each rewritten assert of the tests and setup captures, by id
    seen = _Seen()

    def run(stage, source, filename, index=None):
        record(event="start", stage=stage, index=index)
        sources[filename] = source
        try:
            if stage == "solution":
                code = compile(source, filename, "exec")
            else:
                code = _compile_checked(source, filename, asserts)
        except SyntaxError as exc:
            record(event="fail", stage=stage, index=index, kind="SyntaxError",
                   **_explain(exc, sources, asserts, seen))
            return False
        namespace[_SEEN] = seen  # put back before each run: the solution shares this namespace
        try:
            exec(code, namespace)  # noqa: S102 - this process is the sandbox
        except SystemExit as exc:
            record(event="fail", stage=stage, index=index, kind="SystemExit",
                   error=_piece(f"the code called exit({_repr(exc.code)})"))
            return False
        except BaseException as exc:  # noqa: BLE001
            try:
                info = _explain(exc, sources, asserts, seen)
            except BaseException as inner:  # noqa: BLE001 - e.g. a value whose repr hits a limit
                info = {"error": _piece(f"{type(exc).__name__} (not described: {type(inner).__name__})")}
            record(event="fail", stage=stage, index=index, kind=type(exc).__name__, **info)
            return False
        return True

    # The setup code runs first. Fixtures that build objects from the solution's own classes (MBPP
    # 367 and 927 build trees of the solution's `Node`) fail with NameError there; they run again
    # once the solution is defined, before the tests.
    setup, ok, deferred = job["setup"], True, False
    if setup.strip():
        try:
            namespace[_SEEN] = seen
            code = _compile_checked(setup, "setup.py", asserts)
            exec(code, namespace)  # noqa: S102
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
