"""Pulling a program out of a model response, and judging it."""

import pytest

from reflectevo.verify.code import extract_code, function_names, judge_code
from reflectevo.verify.sandbox import Limits

FAST = Limits(cpu_seconds=2, wall_seconds=5)
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"]
GOOD = "def add(a, b):\n    return a + b"

CASES = [
    (f"```python\n{GOOD}\n```", GOOD),
    (f"Here you go:\n```py\n{GOOD}\n```\nThis adds numbers.", GOOD),
    (f"```Python\n{GOOD}\n```", GOOD),
    (f"```\n{GOOD}\n```", GOOD),
    (GOOD, GOOD),
    (f"```python\n{GOOD}", GOOD),  # cut off before the closing fence
    (f"Old:\n```python\ndef add(a, b):\n    return a - b\n```\nFixed:\n```python\n{GOOD}\n```", GOOD),
    (f"```python\n{GOOD}\n```\nUsage:\n```python\nprint(add(1, 2))\n```", GOOD),
    (f"Sure! The function is below.\n{GOOD}\nIt returns the sum.", GOOD),
    (f"```python\nimport math\n\n{GOOD}\n```", f"import math\n\n{GOOD}"),
]


@pytest.mark.parametrize("response,expected", CASES)
def test_extract_code(response, expected):
    assert extract_code(response, ["add"]) == expected


@pytest.mark.parametrize("response", ["", "   ", "I could not write this function."])
def test_no_code_is_an_extraction_failure(response):
    verdict = judge_code(response, TESTS, limits=FAST)
    assert verdict.extraction_failed and not verdict.correct


def test_function_names():
    assert function_names(['assert remove_Occ("hello","l") == "heo"']) == ["remove_Occ"]
    assert function_names(["assert math.isclose(area(2), 12.56, rel_tol=0.01)"]) == ["area"]
    assert function_names(["assert set(f(1)) == set([1])"]) == ["f"]


def test_judge_code_verdicts():
    right = judge_code(f"```python\n{GOOD}\n```", TESTS, limits=FAST)
    assert right.correct and right.feedback == "correct" and right.details["tests_passed"] == 2
    wrong = judge_code("```python\ndef add(a, b):\n    return a * b\n```", TESTS, limits=FAST)
    assert not wrong.correct and not wrong.extraction_failed
    assert "assert add(1, 2) == 3" in wrong.feedback and "returned 2" in wrong.feedback
    assert wrong.details["failed_test"] == "assert add(1, 2) == 3"


def test_function_names_of_a_check_function():
    check = "def check(candidate):\n    assert candidate(1) == 2\n    for x in [3]:\n        assert candidate(x) == x + 1\n\ncheck(add_one)"
    assert function_names([check]) == ["add_one"]
    assert function_names(["result = g(3)\nassert result == 9"]) == ["g"]


# Feedback a model can act on: for a failing test the feedback names the failing line of the test (also
# inside a multi-line check function) and the value the code returned, and it stays short. Every case
# below runs in the real sandbox.

def _feedback(code, tests, setup=""):
    verdict = judge_code(f"```python\n{code}\n```", tests, setup, limits=FAST)
    assert not verdict.correct and not verdict.extraction_failed
    feedback = verdict.feedback
    assert len(feedback) <= 300 and 1 <= len(feedback.splitlines()) <= 3, feedback
    assert "Traceback" not in feedback and "runner.py" not in feedback and "_sandbox_runner" not in feedback
    return feedback


def test_plain_assert_names_the_assert_and_the_returned_value():
    tests = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(0, 0) == 0"]
    assert _feedback("def add(a, b):\n    return a * b", tests) == (
        "Test 1 of 3 failed: assert add(1, 2) == 3\nadd(1, 2) returned 2")
    assert _feedback("def add(a, b):\n    return a + b + (a == 2)", tests) == (
        "Test 2 of 3 failed: assert add(2, 2) == 4\nadd(2, 2) returned 5")
    # Other assert shapes: the call of the tested function is what is shown.
    assert _feedback("def area(r):\n    return 3.0", ["assert math.isclose(area(2), 12.56, rel_tol=0.01)"],
                     "import math").endswith("\narea(2) returned 3.0")
    assert _feedback("def is_odd(n):\n    return True", ["assert not is_odd(2)"]).endswith("\nis_odd(2) returned True")
    assert _feedback("def pair(n):\n    return [n, n]", ["assert set(pair(1)) == set([1, 2])"]).endswith(
        "\nset(pair(1)) returned {1}; expected {1, 2}")


def test_the_value_is_the_one_the_test_saw_not_a_rerun():
    # A stateful function: re-evaluating the call to show its value would show 2, the test saw 1.
    code = "calls = 0\ndef tick():\n    global calls\n    calls += 1\n    return calls"
    assert _feedback(code, ["assert tick() == 5"]).endswith("\ntick() returned 1")


def test_check_function_names_the_failing_line_inside_it():
    check = ("def check(candidate):\n"
             "    assert candidate(1) == 2\n"
             "    for x, y in [(2, 3), (5, 7)]:\n"
             "        assert candidate(x) == y, f'wrong for {x}'\n"
             "    assert candidate(0) == 1\n"
             "\n"
             "check(add_one)")
    feedback = _feedback("def add_one(n):\n    return n + 1 if n < 4 else n", [check])
    assert feedback == ("Test 1 of 1 failed at line 4 (in check): assert candidate(x) == y, f'wrong for {x}'\n"
                        "candidate(x) returned 5; expected 7 (with x = 5)")
    # The check function in the setup code (YAML code tasks, HumanEval's `check(candidate)`).
    setup = "def check(candidate):\n    assert candidate('ab') == 'ba'\n    assert candidate('abc') == 'cba'"
    feedback = _feedback("def rev(s):\n    return s[::-1] if len(s) < 3 else s", ["check(rev)"], setup)
    assert feedback == ("Test 1 of 1 failed at line 3 of the setup code (in check): assert candidate('abc') == 'cba'\n"
                        "candidate('abc') returned 'abc'")


def test_multi_line_yaml_code_task_test(tmp_path):
    import json

    from reflectevo.tasks import get_task

    test = "result = mul(3, 4)\nassert result == 12"
    (tmp_path / "c.jsonl").write_text(json.dumps({"question": "Multiply.", "tests": [test]}) + "\n")
    (tmp_path / "c.yaml").write_text("answer_type: code\ndata: c.jsonl\n")
    task = get_task(str(tmp_path / "c.yaml"))
    problem = task.load("test")[0]
    assert problem.meta["entry_point"] == "mul"
    verdict = task.verify(problem, "```python\ndef mul(a, b):\n    return a + b\n```")
    assert verdict.feedback == "Test 1 of 1 failed at line 2: assert result == 12\nresult is 7"


def test_exception_names_type_message_and_the_line_of_the_code():
    code = "def ratio(a, b):\n    total = a + b\n    return a / (b - b)"
    assert _feedback(code, ["assert ratio(1, 2) == 0.5"]) == (
        "Test 1 of 1 failed: assert ratio(1, 2) == 0.5\nZeroDivisionError: division by zero\n"
        "raised at line 3 of your code: return a / (b - b)")
    # Raised deep inside the standard library: the model's line that called it.
    code = "import json\n\ndef parse(text):\n    return json.loads(text)"
    feedback = _feedback(code, ["assert parse('{') == {}"])
    assert feedback.splitlines()[1].startswith("JSONDecodeError: Expecting property name")
    assert feedback.splitlines()[2] == "raised at line 4 of your code: return json.loads(text)"
    # An assert in the model's own code is the model's error, not a failed test comparison.
    feedback = _feedback("def f(x):\n    assert x > 5, 'too small'\n    return x", ["assert f(2) == 2"])
    assert feedback.splitlines()[1:] == ["AssertionError: too small",
                                        "raised at line 2 of your code: assert x > 5, 'too small'"]
    # The tested function is missing: said plainly, no line of the code to blame.
    assert _feedback("def g(x):\n    return x", ["assert f(2) == 2"]) == (
        "Test 1 of 1 failed: assert f(2) == 2\nNameError: name 'f' is not defined")
    # Errors before the tests: the solution's own line, and a syntax error's line.
    assert _feedback("x = [][0]\ndef f(x):\n    return x", ["assert f(2) == 2"]) == (
        "The solution code failed before the tests ran: IndexError: list index out of range\n"
        "raised at line 1 of your code: x = [][0]")
    assert _feedback("def f(x)\n    return x", ["assert f(2) == 2"]) == (
        "The solution code failed before the tests ran: SyntaxError: expected ':'\n"
        "raised at line 1 of your code: def f(x)")


def test_deep_recursion_stays_short():
    feedback = _feedback("def f(x):\n    return f(x + 1)", ["assert f(1) == 2"])
    assert feedback.splitlines()[1].startswith("RecursionError: maximum recursion depth exceeded")
    assert feedback.splitlines()[2] == "raised at line 2 of your code: return f(x + 1)"


def test_huge_values_are_clipped_in_the_middle():
    feedback = _feedback("def f(n):\n    return list(range(n))", ["assert f(100000) == [0]"])
    head, value = feedback.splitlines()
    assert head == "Test 1 of 1 failed: assert f(100000) == [0]"
    full = repr(list(range(100000)))
    assert value.startswith("f(100000) returned [0, 1, 2, 3,") and value.endswith("99998, 99999]")
    shown = value[len("f(100000) returned "):]
    before, cut, after = shown.partition(" ...[")
    count, _, after = after.partition(" chars cut]... ")
    assert full.startswith(before) and full.endswith(after)
    assert len(before) + int(count) + len(after) == len(full)  # the count is exact
    assert len(feedback) <= 300
    # A long test line and a long returned string at once: both clipped, the whole still fits.
    long_in, long_out = "b" * 800, "c" * 800
    feedback = _feedback("def f(s):\n    return 'a' * 5000", [f"assert f('{long_in}') == '{long_out}'"])
    first, second = feedback.splitlines()
    assert first.startswith("Test 1 of 1 failed: assert f('bbbb") and first.endswith("cccc'")
    assert " returned 'aaaa" in second and second.endswith("aaaa'") and "chars cut" in second


def test_unprintable_and_hostile_values():
    code = "class Bad:\n    def __repr__(self):\n        raise ValueError('no repr')\ndef f(x):\n    return Bad()"
    assert _feedback(code, ["assert f(1) == 2"]).endswith("\nf(1) returned <unprintable Bad: ValueError>")
    # A value whose repr has newlines or is huge and nested stays on its lines and within the cap.
    code = "def f(x):\n    v = []\n    for _ in range(50):\n        v = [v, 'x\\n' * 100]\n    return v"
    assert _feedback(code, ["assert f(1) == 2"]).startswith("Test 1 of 1 failed: assert f(1) == 2\nf(1) returned [[")
