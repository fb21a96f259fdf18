"""Option-letter extraction: a table of tricky responses."""

import pytest

from reflectevo.verify.choice import extract_choice, judge_choice

CASES = [
    ("B", "B"),
    ("(B)", "B"),
    ("B.", "B"),
    ("b", "B"),
    ("Answer: b", "B"),
    ("The answer is: C", "C"),
    ("The answer is (D).", "D"),
    ("**Answer:** **A**", "A"),
    ("The correct option is: **C**", "C"),
    ("So the answer would be option D.", "D"),
    ("Let's check A. A is wrong because... B fits too, but C is the best.\nThe answer is B", "B"),
    ("Option A says X. Option C says Y. Therefore the answer is A.", "A"),
    ("The answer is C. Wait, re-checking: the answer is D.", "D"),
    ("Final answer: \\boxed{B}", "B"),
    ("\\boxed{\\text{C}}", "C"),
    ("I choose (A) because it follows.", "A"),
    ("After analysis, B is the correct answer.", "B"),
    ("Step 1: a passage is given.\nStep 2: ...\n(C)", "C"),
    ("The answer is [A]", "A"),
    ("answer:d", "D"),
    ("Answer: \"B\"", "B"),
    ("C) Civic Park is north of the area", "C"),
    ("The answer is: A, because the passage says so.", "A"),
    ("The answer is a", "A"),
    ("The answer is a bit unclear, but I think the answer is (B)", "B"),
    ("Answer:\n\nD", "D"),
]

NO_ANSWER = [
    "",
    "I am not sure.",
    "This is a hard question about a bird.",
    "The answer is E",  # not an option of A-D
    "Answering requires more information.",
]


@pytest.mark.parametrize("response,expected", CASES)
def test_extracts_letter(response, expected):
    assert extract_choice(response, "ABCD") == expected


@pytest.mark.parametrize("response", NO_ANSWER)
def test_no_letter_is_an_extraction_failure(response):
    verdict = judge_choice(response, "A", "ABCD")
    assert verdict.extraction_failed and not verdict.correct and verdict.extracted is None


def test_three_option_tasks_ignore_d():
    assert extract_choice("The answer is D", "ABC") is None
    assert extract_choice("The answer is (c)", "ABC") == "C"


def test_gold_is_case_insensitive_and_wrong_answers_fail():
    assert judge_choice("The answer is B", "b").correct
    wrong = judge_choice("The answer is C", "b")
    assert not wrong.correct and not wrong.extraction_failed and wrong.extracted == "C"
    assert wrong.feedback == "incorrect"
