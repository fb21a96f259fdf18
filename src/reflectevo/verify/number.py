"""Numeric answers (GSM8K style): the final number, commas, currency and units removed.

The number after the last answer cue ("The answer is", "Answer:", "####", \\boxed{}) if there is one,
else the last number in the text. Thousands separators must be well-formed ("1,234,567"), so a list
"1,2,3" is not read as 123. Simple fractions ("3/4") and percentages ("50%" -> 50) are understood.
Numbers compare by value: 5 = 5.0 = 5.00.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from reflectevo.records import Verdict

_NUM = r"(?<![\w.])[-−]?\s?[$€£]?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+(?![\d.]))?(?![\d])"
_NUMBER = re.compile(_NUM)
_CUES = [
    re.compile(r"\\boxed\s*\{", re.I),
    re.compile(r"####", re.I),
    re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=|would\s+be|should\s+be)\s*:?", re.I),
]


def parse_number(text: str) -> Decimal | None:
    """The value of one number as written ("$1,234.50", "-3", "3/4", "50%"), or None."""
    cleaned = re.sub(r"[,$€£%\s]", "", str(text)).replace("−", "-")
    cleaned = cleaned.rstrip(".")
    try:
        if "/" in cleaned:
            num, den = cleaned.split("/", 1)
            return Decimal(num) / Decimal(den) if Decimal(den) != 0 else None
        return Decimal(cleaned)
    except (InvalidOperation, ValueError):
        return None


def _normalise(raw: str) -> str | None:
    value = parse_number(raw)
    if value is None:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value.normalize(), "f")
    return text


def extract_number(text: str) -> str | None:
    """The number after the last answer cue if there is one, else the last number in the text."""
    if not text:
        return None
    for cue in _CUES:
        positions = [m.end() for m in cue.finditer(text)]
        for position in reversed(positions):
            line = text[position:].split("\n", 1)[0]
            if not line.strip() and position < len(text):
                # "Answer:\n42": the number may sit on the next line
                rest = text[position:].lstrip()
                line = rest.split("\n", 1)[0] if rest else ""
            match = _NUMBER.search(line.replace("**", ""))
            if match:
                return _normalise(match.group(0))
    numbers = _NUMBER.findall(text)
    for raw in reversed(numbers):
        value = _normalise(raw)
        if value is not None:
            return value
    return None


def judge_number(response: str, gold: str) -> Verdict:
    extracted = extract_number(response)
    if extracted is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect")
    gold_value, value = parse_number(gold), parse_number(extracted)
    correct = gold_value is not None and value is not None and value == gold_value
    return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect")
