"""Numeric answers (GSM8K style): the final number, commas, currency and units removed."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from reflectevo.records import Verdict

_NUMBER = r"-?\$?\s*\d[\d,]*(?:\.\d+)?"
_ANSWER_CUES = [
    r"answer\s*(?:is|:)\s*[:\s]*(?:\*\*)?\s*(" + _NUMBER + ")",
    r"####\s*(" + _NUMBER + ")",
    r"\\boxed\{\s*(" + _NUMBER + r")\s*\}",
]


def parse_number(text: str) -> Decimal | None:
    cleaned = re.sub(r"[,$\s]", "", text)
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def extract_number(text: str) -> str | None:
    """The number after an answer cue if there is one, else the last number in the text."""
    for cue in _ANSWER_CUES:
        matches = re.findall(cue, text, flags=re.IGNORECASE)
        if matches:
            return _normalise(matches[-1])
    numbers = re.findall(_NUMBER, text)
    return _normalise(numbers[-1]) if numbers else None


def _normalise(raw: str) -> str | None:
    value = parse_number(raw)
    if value is None:
        return None
    value = value.normalize()
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


def judge_number(response: str, gold: str) -> Verdict:
    extracted = extract_number(response)
    if extracted is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect")
    gold_value, value = parse_number(gold), parse_number(extracted)
    correct = gold_value is not None and value is not None and value == gold_value
    return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect")
