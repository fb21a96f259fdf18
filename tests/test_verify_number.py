"""Numeric answers: a table of tricky responses."""

import pytest

from reflectevo.verify.number import extract_number, judge_number, parse_number

CASES = [
    ("The answer is: 72", "72"),
    ("The answer is: 1,234", "1234"),
    ("The answer is $1,000,000.", "1000000"),
    ("She pays $18.00 in total.\nThe answer is: $18.00", "18"),
    ("The answer is 5.", "5"),
    ("The answer is: **42**", "42"),
    ("#### 72", "72"),
    ("So the total is \\boxed{36}.", "36"),
    ("The answer is: -3", "-3"),
    ("The answer is 12 apples. (Check: 3 * 4 = 12, and 20 - 8 = 12.)", "12"),
    ("5 + 7 = 12 apples in all", "12"),
    ("The answer is 0.50", "0.5"),
    ("The numbers are 1,2,3 and the sum is 6", "6"),
    ("Answer:\n42", "42"),
    ("The answer is 75%", "75"),
    ("The answer is: 3/4", "0.75"),
    ("First 10, then 20. The answer is 20, not 10.", "20"),
    ("The answer is: Janet makes 18 dollars every day.", "18"),
    ("The answer is −5", "-5"),
    ("It takes 2.5 hours", "2.5"),
    ("To answer 3 questions she needs 12 minutes, so 36 minutes.", "36"),
]


@pytest.mark.parametrize("response,expected", CASES)
def test_extracts_number(response, expected):
    assert extract_number(response) == expected


@pytest.mark.parametrize("response,gold", [("The answer is 10.0", "10"), ("The answer is $1,000", "1000"),
                                           ("The answer is 5 dollars", "5"), ("#### 0.5", ".5")])
def test_equal_values_verify(response, gold):
    verdict = judge_number(response, gold)
    assert verdict.correct and not verdict.extraction_failed


@pytest.mark.parametrize("response", ["", "I cannot solve this.", "The answer is unknown."])
def test_no_number_is_an_extraction_failure(response):
    verdict = judge_number(response, "3")
    assert verdict.extraction_failed and not verdict.correct


def test_wrong_number_fails():
    verdict = judge_number("The answer is: 71", "72")
    assert not verdict.correct and not verdict.extraction_failed and verdict.extracted == "71"


def test_parse_number():
    assert parse_number("1,234.50") == parse_number("1234.5")
    assert parse_number("abc") is None
