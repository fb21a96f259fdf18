"""Option-letter extraction (A-D style answers) for multiple-choice tasks."""

from __future__ import annotations

import re

from reflectevo.records import Verdict

# Most specific first: an explicit "answer is X" beats a letter seen anywhere in the text.
_PATTERNS = [
    r"answer\s*(?:is|:)?\s*(?:option\s*)?[\(\[\*]*\s*([A-{L}])\b",
    r"\boption\s*[\(\[]?([A-{L}])\b",
    r"^\s*[\(\[\*]*([A-{L}])[\)\]\.\:\*]*\s*$",
    r"[\(\[]([A-{L}])[\)\]]",
]


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """Return the chosen upper-case letter, or None if no choice can be found."""
    last = letters[-1].upper()
    for pattern in _PATTERNS:
        regex = re.compile(pattern.replace("{L}", last), re.IGNORECASE | re.MULTILINE)
        matches = regex.findall(text)
        if matches:
            return matches[-1].upper()
    return None


def judge_choice(response: str, gold: str, letters: str = "ABCD") -> Verdict:
    extracted = extract_choice(response, letters)
    if extracted is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect")
    correct = extracted == gold.strip().upper()
    return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect")
