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
