"""Free-text answers: SQuAD-style normalised exact match, token F1 as a detail."""

import pytest

from reflectevo.verify.text import extract_text_answer, f1_score, judge_text, normalize_answer

# (response, gold, exact match expected)
CASES = [
    ("The answer is: fisheye", "fisheye", True),
    ("The answer is: Fisheye.", "fisheye", True),
    ("Answer: the girl", "the girl", True),
    ("The answer is: girl", "the girl", True),
    ("The answer is: \"The court\"", "The court", True),
    ("The answer is: **1930**", "1930", True),
    ("The user wants a wide lens.\nThe answer is: a fisheye lens", "fisheye", False),
    ("on/off switch", "on/off switch", True),
    ("The answer is: on off switch", "on/off switch", False),  # SQuAD drops "/", giving "onoff"
    ("The answer is: white-noise machines!", "white noise machines", False),
    ("Reasoning... The answer is: 1995\nThat is when it was founded.", "1995", True),
    ("The answer is: Bag", "bag", True),
]


@pytest.mark.parametrize("response,gold,exact", CASES)
def test_exact_match_table(response, gold, exact):
    verdict = judge_text(response, gold)
    assert verdict.correct is exact
    assert not verdict.extraction_failed
    assert 0.0 <= verdict.details["f1"] <= 1.0


def test_partial_answer_keeps_f1():
    verdict = judge_text("The answer is: a fisheye lens", "fisheye")
    assert not verdict.correct and verdict.details["f1"] == pytest.approx(2 / 3, abs=1e-3)


def test_aliases():
    assert judge_text("The answer is: USA", "United States", aliases=["USA"]).correct


@pytest.mark.parametrize("response", ["", "   ", "Let me think about this passage carefully. It talks about many "
                                      "things and I am not sure which one the question means at all."])
def test_no_answer_is_an_extraction_failure(response):
    verdict = judge_text(response, "fisheye")
    assert verdict.extraction_failed and not verdict.correct


def test_normalisation_and_f1():
    assert normalize_answer("The  Court!") == "court"
    assert f1_score("new york city", "New York") == pytest.approx(0.8)
    assert extract_text_answer("Final answer: Paris") == "Paris"
