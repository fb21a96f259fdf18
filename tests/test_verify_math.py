"""Math answers: equivalence through math-verify, a table of tricky cases."""

import pytest

from reflectevo.verify.math import judge_math, last_boxed

# (response, gold, expected: True correct / False wrong)
CASES = [
    ("The answer is \\boxed{10.0}", "10", True),
    ("\\boxed{10}", "10.0", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{1/2}", "\\frac12", True),
    ("\\boxed{\\dfrac{9}{7}}", "\\frac{9}{7}", True),
    ("\\boxed{\\tfrac{9}{7}}", "\\dfrac{9}{7}", True),
    ("\\boxed{[2,5)}", "[2, 5)", True),
    ("\\boxed{(2,5)}", "[2, 5)", False),
    ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]", True),
    ("\\boxed{\\{1,2,3\\}}", "\\{3,2,1\\}", True),
    ("\\boxed{5\\text{ cm}}", "5", True),
    ("\\boxed{5 \\text{ inches}}", "5", True),
    ("\\boxed{x=5}", "5", True),
    ("The answer is: 5", "5", True),
    ("So the final answer is $\\frac{3}{4}$.", "0.75", True),
    ("\\boxed{\\text{Devon}}", "\\text{Devon}", True),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", True),
    ("\\boxed{50\\%}", "50", True),
    ("\\boxed{\\$18.90}", "18.90", True),
    ("\\boxed{10^\\circ}", "10", True),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("\\boxed{3 + 2i}", "3+2i", True),
    ("\\boxed{6}", "5", False),
    ("\\boxed{\\frac{1}{3}}", "0.33", False),
    ("\\boxed{-5}", "5", False),
    ("First I get \\boxed{4}, but correcting: \\boxed{8}", "8", True),
    ("First I get \\boxed{8}, but correcting: \\boxed{4}", "8", False),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt3}{2}", True),
]


@pytest.mark.parametrize("response,gold,expected", CASES)
def test_equivalence_table(response, gold, expected):
    verdict = judge_math(response, gold)
    assert not verdict.extraction_failed
    assert verdict.correct is expected, verdict


@pytest.mark.parametrize("response", ["", "I do not know how to solve this.", "Let me think"])
def test_no_answer_is_an_extraction_failure(response):
    verdict = judge_math(response, "5")
    assert verdict.extraction_failed and not verdict.correct and verdict.extracted is None


@pytest.mark.parametrize("text,expected", [
    ("so $b=\\boxed{-5}$ is least", "-5"),
    ("\\boxed{\\frac{1}{2}} then \\boxed{\\left\\{ 1 \\right\\}}", "\\left\\{ 1 \\right\\}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
    ("\\boxed 5", "5"),
    ("\\fbox{7}", "7"),
    ("no box here", None),
    ("cut off \\boxed{\\frac{1}{", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_works_outside_the_main_thread():
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        verdicts = list(pool.map(lambda r: judge_math(r, "\\frac{1}{2}"), ["\\boxed{0.5}", "\\boxed{2}"]))
    assert [v.correct for v in verdicts] == [True, False]
