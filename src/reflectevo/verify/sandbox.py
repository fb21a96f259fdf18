"""Run untrusted Python (model-written code and its tests) in a separate, limited process.

Never inside the pipeline's own process. Each run gets:

- a fresh `python -I -B` interpreter (isolated mode: no user site, no PYTHON* variables, no script
  folder on sys.path) with an environment stripped of the parent's variables (no secrets leak) and
  HOME/TMPDIR set to a throw-away working folder that is deleted afterwards;
- resource limits applied inside that interpreter before any user code runs: RLIMIT_CPU, RLIMIT_AS
  (memory), RLIMIT_NPROC (processes, counted on top of what the uid already runs), RLIMIT_FSIZE (file
  and captured-output size), RLIMIT_NOFILE, no core files (set in the child, not via preexec_fn,
  which is unsafe with the thread pool of `run_many`). When the pipeline runs as root, the child
  drops to uid/gid 65534 (nobody) first, because root ignores RLIMIT_NPROC and may write anywhere;
  if nobody cannot run this interpreter (a Python under /root), it stays root inside a new user
  namespace instead (no host capabilities: it cannot raise its limits or override file permissions),
  and new processes are stopped by the audit hook alone;
- a wall-clock timeout that kills the whole process group (and, with namespaces, the whole PID
  namespace, so even daemonised grandchildren die);
- no network: when `unshare` can create namespaces here (root, or unprivileged user namespaces),
  the process runs in a new network namespace (no interfaces but a down loopback) and a new PID
  namespace; in every case an audit hook also refuses socket creation, writes outside the working
  folder, new processes and native calls through ctypes, so the guarantees hold (less strongly) where
  namespaces are unavailable. `isolation().describe()` says what is active;
- stdout/stderr captured to files, bounded by RLIMIT_FSIZE; only a bounded head/tail is read back.

The feedback of a failure is one to three lines, at most FEEDBACK_CHARS (300) characters: the failing
test (or, for a multi-line test or check function, the failing line inside it) and what the code
returned there, or the error with the line of the solution that raised it; long texts are clipped in
the middle, saying how many characters were cut (`fit`).

The limits protect the machine and the run; they do not make a verdict forgery-proof against code
written to attack the grader (code runs in the same interpreter as its tests).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

NOBODY = 65534
_RUNNER = Path(__file__).with_name("_sandbox_runner.py")
FEEDBACK_CHARS = 300  # the whole feedback of a failure: at most three short lines


@dataclass(frozen=True)
class Limits:
    """Per-run limits. The defaults suit MBPP-sized functions: the slowest of MBPP's 974 reference
    solutions (task 123, amicable numbers below 9999 by brute force) needs 4.7 s of CPU on a 2-core EPYC,
    so a 5 s limit failed it on a slower machine; 10 s gives it twice that and every other reference
    (<= 0.14 s) seventy times."""

    cpu_seconds: int = 10
    wall_seconds: float = 20.0
    memory_mb: int = 1024
    max_processes: int = 16
    file_size_mb: int = 8
    max_open_files: int = 64
    allow_processes: bool = False
    output_chars: int = 4000  # of stdout/stderr kept in the result (head and tail)


@dataclass
class SandboxResult:
    """What happened. `status` is one of: passed, failed (a test failed), error (setup or solution
    raised), syntax_error, timeout, cpu_limit, memory_limit, output_limit, crashed."""

    passed: bool
    status: str
    feedback: str
    tests_passed: int = 0
    tests_total: int = 0
    failed_test: str | None = None
    stdout: str = ""
    stderr: str = ""
    returncode: int | None = None
    seconds: float = 0.0
    isolation: str = ""
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Isolation:
    """How sandboxed processes are started on this machine (probed once per process)."""

    prefix: tuple[str, ...]  # the `unshare ...` command line, or () when namespaces are unavailable
    drop_to_nobody: bool  # root pipeline: the child switches to uid/gid 65534 before user code

    @property
    def network(self) -> str:
        return "namespace" if self.prefix else "audit-hook"

    @property
    def process_limit(self) -> bool:
        """Whether RLIMIT_NPROC binds (it never binds uid 0, namespaced or not)."""
        return os.geteuid() != 0 or self.drop_to_nobody

    def describe(self) -> str:
        user = "nobody (65534)" if self.drop_to_nobody else ("root in a user namespace"
                                                             if os.geteuid() == 0 else "the current user")
        return (f"network: {self.network}; pid namespace: {'yes' if self.prefix else 'no'}; "
                f"runs as: {user}; process limit: {'yes' if self.process_limit else 'no (audit hook only)'}")


_PROBE = "import json, warnings, socket, collections, re"


def _works(command: list[str], **kwargs) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20, env={}, cwd="/",
                              **kwargs).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """Probe what this machine allows: namespaces via `unshare`, and (as root) whether uid 65534
    can run this interpreter (a Python installed under /root is unreadable to it)."""
    python = [sys.executable, "-I", "-B", "-c", _PROBE]
    drop = os.geteuid() == 0 and _works(python, user=NOBODY, group=NOBODY, extra_groups=[])
    exe = shutil.which("unshare")
    prefix: tuple[str, ...] = ()
    if exe and not os.environ.get("REFLECTEVO_SANDBOX_NO_NAMESPACES"):
        base = [exe, "--net", "--pid", "--fork", "--kill-child"]
        # Without the drop, root enters a user namespace too, which takes away its host capabilities
        # (it can no longer raise its own limits or override file permissions).
        candidate = base if drop else [exe, "--user", "--map-root-user", *base[1:]]
        if _works(candidate + python):
            prefix = tuple(candidate)
    return Isolation(prefix=prefix, drop_to_nobody=drop)


def _read_bounded(path: Path, limit: int) -> str:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            if size <= limit:
                return handle.read().decode("utf-8", "replace")
            head = handle.read(limit // 2).decode("utf-8", "replace")
            handle.seek(size - limit // 2)
            tail = handle.read().decode("utf-8", "replace")
        return f"{head}\n... [{size - limit} characters cut] ...\n{tail}"
    except OSError:
        return ""


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: Path) -> None:
    def make_writable_and_retry(func, target, _exc):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    shutil.rmtree(path, onerror=make_writable_and_retry)


def run_tests(code: str, tests: Sequence[str], setup: str = "", limits: Limits | None = None) -> SandboxResult:
    """Run `setup`, then `code`, then each test (stopping at the first failure) in a sandbox."""
    limits = limits or Limits()
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="reflectevo-sandbox-"))
    try:
        return _run_in(root, code, list(tests), setup, limits, started)
    finally:
        _remove_tree(root)


def _run_in(root: Path, code: str, tests: list[str], setup: str, limits: Limits, started: float) -> SandboxResult:
    workdir = root / "work"
    workdir.mkdir()
    os.chmod(root, 0o711)
    mode = isolation()
    drop = mode.drop_to_nobody
    if drop:
        os.chown(workdir, NOBODY, NOBODY)
    result_path = root / "result.log"
    job = {"setup": setup, "code": code, "tests": tests, "workdir": str(workdir),
           "result_path": str(result_path), "uid": NOBODY if drop else None,
           "gid": NOBODY if drop else None, "limits": asdict(limits)}
    (root / "job.json").write_text(json.dumps(job), encoding="utf-8")
    runner = root / "runner.py"
    shutil.copyfile(_RUNNER, runner)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(workdir), "TMPDIR": str(workdir),
           "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    command = [*mode.prefix, sys.executable, "-I", "-B", str(runner)]
    with open(root / "stdout", "wb") as out, open(root / "stderr", "wb") as err:
        proc = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err, start_new_session=True, close_fds=True)
        timed_out = threading.Event()

        def on_timeout() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        timer = threading.Timer(limits.wall_seconds, on_timeout)
        timer.start()
        try:
            # wait4, not Popen.wait: it blocks without polling and reports the CPU time used by the
            # child and the descendants it waited for (through `unshare`, the user code itself).
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        # The group id stays reserved while any member lives, so killing it after the leader has
        # been reaped is safe; it ends stragglers when no PID namespace does it for us.
        _kill_group(proc.pid)
    cpu_used = usage.ru_utime + usage.ru_stime
    events = []
    try:
        for line in result_path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    except OSError:
        pass
    stdout = _read_bounded(root / "stdout", limits.output_chars)
    stderr = _read_bounded(root / "stderr", limits.output_chars)
    result = _interpret(events, tests, proc.returncode, timed_out.is_set(), cpu_used, stderr, limits)
    result.stdout, result.stderr = stdout, stderr
    result.returncode = proc.returncode
    result.seconds = round(time.monotonic() - started, 3)
    result.isolation = mode.network
    result.details["cpu_seconds"] = round(cpu_used, 3)
    return result


_PIECE = 1000  # the runner sends at most this many characters from each end of a long text
_MIN_PIECE = 40  # no text is clipped below this many characters (the cut marker takes ~26)


@dataclass(frozen=True)
class Text:
    """A text the feedback may clip in the middle: its start, its end and its full length (the runner
    sends only the ends of a long value)."""

    head: str
    tail: str = ""
    length: int = 0

    @classmethod
    def of(cls, value) -> "Text":
        """From the runner's {head, tail, length} (trusted for nothing: clipped, cast) or a plain string."""
        if isinstance(value, dict):
            head, tail = _one_line(value.get("head", ""))[:_PIECE], _one_line(value.get("tail", ""))[-_PIECE:]
            length = value.get("length")
            if not tail or not isinstance(length, int) or length < len(head) + len(tail):
                return cls.of(head + tail)
            return cls(head, tail, length)
        text = _one_line("" if value is None else value)
        if len(text) > 2 * _PIECE:
            return cls(text[:_PIECE], text[-_PIECE:], len(text))
        return cls(text, "", len(text))

    def render(self, limit: int) -> str:
        if not self.tail and self.length <= limit:
            return self.head
        end = self.tail or self.head
        keep = limit
        for _ in range(3):  # the marker's length depends on the count it shows
            marker = f" ...[{self.length - keep} chars cut]... "
            keep = max(limit - len(marker), 2)
        front = (keep * 2) // 3
        return self.head[:front] + marker + end[len(end) - (keep - front):]


def _one_line(value) -> str:
    return str(value).replace("\r", " ").replace("\n", " ")


def clip(text: str, limit: int) -> str:
    """`text` cut in the middle to at most `limit` characters, saying how many were cut."""
    return Text.of(text).render(limit)


def fit(lines: list[list], limit: int = FEEDBACK_CHARS) -> str:
    """Lines of fixed strings and `Text`s, joined and fitted into `limit` characters: the fixed parts stay,
    each `Text` is clipped once, the shortest keep most (water-filling)."""
    lines = [[part if isinstance(part, Text) else _one_line(part) for part in line] for line in lines]
    lines = [line for line in lines if any(part.length if isinstance(part, Text) else part for part in line)]
    fixed = sum(len(part) for line in lines for part in line if isinstance(part, str)) + len(lines) - 1
    texts = sorted((part for line in lines for part in line if isinstance(part, Text)), key=lambda t: t.length)
    available, budget = limit - fixed, {}
    for k, text in enumerate(texts):
        share = max(available // (len(texts) - k), _MIN_PIECE)
        budget[id(text)] = min(text.length, share)
        available -= budget[id(text)]
    out = "\n".join("".join(part.render(budget[id(part)]) if isinstance(part, Text) else part for part in line)
                    for line in lines)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _test_label(tests: list[str], index: int) -> str:
    test = str(tests[index]).strip() if 0 <= index < len(tests) else "?"
    first = test.splitlines()[0] if test else ""
    return f"test {index + 1}: {clip(first, 120)}" + (" ..." if "\n" in test else "")


def _describe_stage(event: dict | None, tests: list[str]) -> str:
    if not event:
        return "before the code started"
    if event.get("stage") == "test" and isinstance(event.get("index"), int):
        return f"while running {_test_label(tests, event['index'])}"
    return f"while running the {event.get('stage')} code"


def _short(value, limit: int = 40) -> str:
    text = _one_line(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _failure_lines(fail: dict, tests: list[str], limits: Limits) -> tuple[str, list[list]]:
    """Status and the (at most three) lines of feedback for a failure the runner described:
    where in the tests it failed, what the code returned there (or the error), and for an error the
    line of the solution that raised it."""
    stage, kind = fail.get("stage"), _short(fail.get("kind", ""))
    error = Text.of(fail.get("error") or kind or "error")
    if kind == "CPUTimeLimitExceeded":
        status, error = "cpu_limit", Text.of(f"CPU time limit exceeded ({limits.cpu_seconds} s)")
    elif kind == "MemoryError":
        status, error = "memory_limit", Text.of(f"MemoryError (memory limit: {limits.memory_mb} MiB)")
    elif kind == "SyntaxError":
        status = "syntax_error"
    elif stage == "test":
        status = "failed"
    else:
        status = "error"
    raised: list = []
    if isinstance(fail.get("raised_line"), int):
        # the runner reports only lines of the solution here (a SyntaxError elsewhere is a `line`)
        raised = [f"raised at line {fail['raised_line']} of your code: ", Text.of(fail.get("raised_text"))]
    index = fail.get("index")
    if stage != "test" or not isinstance(index, int) or not 0 <= index < len(tests):
        return status, [[f"The {_short(stage)} code failed before the tests ran: ", error], raised]
    test = str(tests[index]).strip()
    head = f"Test {index + 1} of {len(tests)} failed"
    line, function = fail.get("line"), fail.get("function")
    within = f" (in {_short(function)})" if function else ""
    if fail.get("file") == "setup.py" and isinstance(line, int):
        first = [f"{head} at line {line} of the setup code{within}: ", Text.of(fail.get("text"))]
    elif "\n" in test and isinstance(line, int) and fail.get("text"):
        first = [f"{head} at line {line}{within}: ", Text.of(fail.get("text"))]
    else:
        first = [f"{head}: ", Text.of(test)]
    if kind != "AssertionError" or raised:
        return status, [first, ["", error], raised]
    second: list = []
    for value in (fail.get("values") or [])[:3]:
        if not isinstance(value, dict):
            continue
        if second:
            second.append("; ")
        verb = {"value": " returned ", "is": " is "}.get(value.get("kind"), "")
        second += ["expected " if not verb else f"{_short(value.get('expr'), 60)}{verb}", Text.of(value.get("repr"))]
    names = [n for n in (fail.get("names") or [])[:3] if isinstance(n, dict)]
    if second and names:
        second.append(" (with ")
        for k, name in enumerate(names):
            second += [", " if k else "", f"{_short(name.get('name'), 30)} = ", Text.of(name.get("repr"))]
        second.append(")")
    if not second:
        message = fail.get("assert_message")
        second = ["AssertionError: ", Text.of(message)] if message else ["AssertionError"]
    return status, [first, second]


def _interpret(events: list[dict], tests: list[str], returncode: int | None, timed_out: bool,
               cpu_used: float, stderr: str, limits: Limits) -> SandboxResult:
    total = len(tests)
    done = next((e for e in events if e.get("event") == "done"), None)
    fail = next((e for e in events if e.get("event") == "fail"), None)
    last_start = next((e for e in reversed(events) if e.get("event") == "start"), None)
    passed_count = sum(1 for e in events if e.get("event") == "start" and e.get("stage") == "test")
    if fail and fail.get("stage") == "test":
        passed_count -= 1
    if done and not fail:
        return SandboxResult(True, "passed", "passed", tests_passed=done["passed"], tests_total=total)
    if fail:
        status, parts = _failure_lines(fail, tests, limits)
        index = fail.get("index")
        failed_test = tests[index] if fail.get("stage") == "test" and isinstance(index, int) and 0 <= index < total \
            else None
        return SandboxResult(False, status, fit(parts), tests_passed=max(passed_count, 0),
                             tests_total=total, failed_test=failed_test)
    where = _describe_stage(last_start, tests)
    failed_test = tests[last_start["index"]] if last_start and last_start.get("stage") == "test" else None
    killed_by = -returncode if returncode is not None and returncode < 0 else None
    if timed_out:
        status, lines = "timeout", [f"Time limit exceeded ({limits.wall_seconds:g} s wall clock) {where}."]
    elif killed_by == signal.SIGXCPU or (returncode != 0 and cpu_used >= limits.cpu_seconds - 0.05):
        status, lines = "cpu_limit", [f"CPU time limit exceeded ({limits.cpu_seconds} s) {where}."]
    elif killed_by == signal.SIGXFSZ:
        status, lines = "output_limit", [f"Output or file size limit exceeded ({limits.file_size_mb} MiB) {where}."]
    elif returncode == 0:
        status, lines = "crashed", [f"The program exited before the tests finished ({where})."]
    else:
        status = "crashed"
        reason = f"signal {signal.Signals(killed_by).name}" if killed_by else f"exit status {returncode}"
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:]
        lines = [f"The program crashed ({reason}) {where}.", *tail]
    return SandboxResult(False, status, fit([[Text.of(line)] for line in lines]), tests_passed=max(passed_count, 0), tests_total=total,
                         failed_test=failed_test)


@dataclass(frozen=True)
class Job:
    code: str
    tests: tuple[str, ...]
    setup: str = ""


def run_many(jobs: Iterable[Job], limits: Limits | None = None, workers: int | None = None) -> list[SandboxResult]:
    """Run many jobs concurrently (each in its own sandbox); results in input order."""
    jobs = list(jobs)
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_tests(job.code, job.tests, job.setup, limits), jobs))
