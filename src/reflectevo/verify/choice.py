"""Option-letter extraction (A-D style answers) for multiple-choice tasks.

Accepts "B", "(B)", "B.", "[B]", "**B**", "Answer: b", "The answer is option (C)", "the correct
choice is D) ...", "\\boxed{B}"; prefers an explicit final-answer statement over letters seen in the
reasoning, and the last such statement over earlier ones. Case-insensitive for explicit answers; a
bare lower-case word such as "a" in prose is not taken for option A.
"""

from __future__ import annotations

import re

from reflectevo.records import Verdict


def _compile(letters: str) -> list[tuple[re.Pattern, bool]]:
    """(pattern, case-insensitive?) from most to least specific."""
    cls = f"[{re.escape(letters.upper())}{re.escape(letters.lower())}]"
    open_ = r"[\(\[\{\*\"'`]*\s*"
    close = r"\s*[\)\]\}\*\"'`]*"
    after = r"(?=$|[\s\)\]\}\*\.\,\:\;\!\?\"'`])"
    cue = (r"(?:final\s+answer|correct\s+answer|correct\s+option|correct\s+choice|best\s+answer|"
           r"the\s+answer|answer|option|choice)")
    return [
        # \boxed{B}, \boxed{\text{B}}
        (re.compile(r"\\boxed\s*\{\s*(?:\\text(?:bf)?\s*\{\s*)?" + open_ + f"({cls})" + close + r"\}",
                    re.I), True),
        # "answer is (B)", "Answer: b", "the correct option is: **C**", "answer would be option D"
        (re.compile(cue + r"\s*(?:is|:|would\s+be|should\s+be|=|-)?\s*(?:is\s*)?:?\s*(?:\*\*)?\s*"
                    r"(?:option|choice|letter)?\s*:?\s*" + open_ + f"({cls})" + close + after, re.I), True),
        # "I choose B", "I pick (C)", "select D"
        (re.compile(r"\b(?:choose|chose|pick|select|go\s+with)\s+(?:option\s+|choice\s+)?" + open_
                    + f"({cls})" + close + after, re.I), True),
        # "B is correct", "(C) is the answer"
        (re.compile(r"(?:^|\s)" + open_ + f"([{re.escape(letters.upper())}])" + close
                    + r"\s+(?:is|would\s+be)\s+(?:the\s+)?(?:correct|right|best|answer)", 0), False),
        # A line that is only the letter: "B", "(B)", "B.", "**B**", "B) text" at the start of the last line
        (re.compile(r"^\s*" + open_ + f"({cls})" + r"\s*[\)\]\}\*\.\:]*\s*$", re.M), True),
        # "(B)" or "[B]" anywhere
        (re.compile(r"[\(\[]\s*([" + re.escape(letters.upper()) + r"])\s*[\)\]]"), False),
    ]


def _article(match: re.Match, text: str) -> bool:
    """A lower-case 'a' followed by a lower-case word is the article ("the answer is a bit ...")."""
    letter = match.group(1)
    return letter == "a" and re.match(r"\s+[a-z]", text[match.end(1):]) is not None


_CACHE: dict[str, list[tuple[re.Pattern, bool]]] = {}


def extract_choice(text: str, letters: str = "ABCD") -> str | None:
    """Return the chosen upper-case letter, or None if no choice can be found."""
    if text is None:
        return None
    patterns = _CACHE.get(letters) or _CACHE.setdefault(letters, _compile(letters))
    for pattern, _ in patterns:
        matches = [m for m in pattern.finditer(text) if not _article(m, text)]
        if matches:
            return matches[-1].group(1).upper()
    # Last resort: a response that is a single letter-with-text line such as "B) Paris"
    stripped = text.strip()
    match = re.match(r"^[\(\[]?\s*([" + re.escape(letters.upper()) + r"])\s*[\)\]\.\:]\s+\S", stripped)
    if match and "\n" not in stripped:
        return match.group(1)
    return None


def judge_choice(response: str, gold: str, letters: str = "ABCD") -> Verdict:
    extracted = extract_choice(response, letters)
    if extracted is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect")
    correct = extracted == gold.strip().upper()
    return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect")
