"""Code answers: pull the program out of a model response and judge it by running tests in the sandbox."""

from __future__ import annotations

import ast
import re
from typing import Sequence

from reflectevo.records import Verdict
from reflectevo.verify.sandbox import Limits, SandboxResult, run_tests

# ```python ... ``` (also ```py, ```Python3, bare ```); the closing fence may be missing when the
# model ran out of tokens.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3", "pycon", "ipython"}
_CODE_LINE = re.compile(r"^\s*(def |class |import |from \S+ import |@|return\b|if |for |while |[A-Za-z_][\w\.]*\s*=)")


_BUILTINS = set(dir(__import__("builtins")))


def function_names(tests: Sequence[str]) -> list[str]:
    """Names the tests call, e.g. ['remove_Occ'] for 'assert remove_Occ("hello","l") == "heo"'; for a
    check function (`def check(candidate): ...` then `check(f)`) the function handed to it, ['f']."""
    names: list[str] = []
    for test in tests:
        try:
            tree = ast.parse(test.strip())
        except SyntaxError:
            continue
        defined: set[str] = set()  # names the tests define themselves: helpers, their parameters, variables
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                if not isinstance(node, ast.Lambda):
                    defined.add(node.name)
                if not isinstance(node, ast.ClassDef):
                    defined.update(a.arg for a in ast.walk(node.args) if isinstance(a, ast.arg))
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            called = [node.func.id]
            if node.func.id in defined:  # check(f): f is the function under test
                called = [a.id for a in node.args if isinstance(a, ast.Name)]
            for name in called:
                if name not in names and name not in _BUILTINS and name not in defined:
                    names.append(name)
    return names


def _defines(code: str, names: Sequence[str]) -> bool:
    return any(re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{re.escape(n)}\b", code, re.M) for n in names)


def _compiles(code: str) -> bool:
    try:
        compile(code, "<candidate>", "exec")
        return True
    except (SyntaxError, ValueError):
        return False


def extract_code(response: str, entry_points: Sequence[str] = ()) -> str | None:
    """The program in a model response, or None if there is none.

    Fenced blocks first (```python, ```py, bare ```): of those, the last one that defines one of
    `entry_points` (the function the tests call), else the last one that compiles, else the last.
    Without fences, the response itself if it compiles, else its longest run of code-looking lines.
    """
    blocks = [body.strip("\n") for tag, body in _FENCE.findall(response)
              if tag.lower() in _PYTHON_TAGS and body.strip()]
    if blocks:
        for test in (lambda b: _defines(b, entry_points), _compiles):
            chosen = [b for b in blocks if test(b)]
            if chosen:
                return chosen[-1]
        return blocks[-1]
    text = response.strip()
    if not text:
        return None
    if _compiles(text) and (_CODE_LINE.search(text) or not entry_points):
        return text
    # Prose around unfenced code: keep from the first code-looking line to the last indented/code line.
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"\s*(def |class |import |from \S+ import |@)", line)), None)
    if start is None:
        return None
    end = start
    for i in range(start + 1, len(lines)):
        line = lines[i]
        if not line.strip() or line[:1] in " \t" or _CODE_LINE.match(line):
            end = i
        else:
            break
    return "\n".join(lines[start:end + 1]).strip("\n") or None


def verdict_from_sandbox(code: str, result: SandboxResult) -> Verdict:
    details = {"status": result.status, "tests_passed": result.tests_passed,
               "tests_total": result.tests_total, "seconds": result.seconds,
               "isolation": result.isolation}
    if result.failed_test:
        details["failed_test"] = result.failed_test
    return Verdict(correct=result.passed, extracted=code,
                   feedback="correct" if result.passed else result.feedback, details=details)


def judge_code(response: str, tests: Sequence[str], setup: str = "", limits: Limits | None = None) -> Verdict:
    """Extract the program and run it against `tests` in the sandbox. The feedback of a failure is at
    most three short lines (300 characters): the failing line of the tests (inside a check function
    too) and the value the code returned there, or the error and the line of the code that raised it."""
    code = extract_code(response, function_names(tests))
    if code is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True,
                       feedback="No Python code was found in the response.")
    return verdict_from_sandbox(code, run_tests(code, tests, setup, limits))
