"""Responses cut off by the token budget: an unfinished answer is not a wrong answer.

A response that ended because it hit max_tokens was cut in the middle of its last line, so whatever
that line held is unfinished: `\\boxed{6` may have been going to be `\\boxed{624}`. The rule:
- the cut-off last line is dropped;
- what remains counts only if it holds a complete answer statement of the task's answer type (an answer
  cue with its value, a closed `\\boxed{...}`, a closed code block), judged as usual ("The answer is 624"
  written before the cut counts);
- otherwise the attempt is an extraction failure, never a wrong answer, and it is marked truncated, so
  tables count truncation apart from failures to follow the format.
The fallbacks a finished response gets (the last number in the text, a bare letter line) do not apply:
in a cut response they are whatever the model was computing when the budget ran out.
"""

from __future__ import annotations

import re

from reflectevo.verify.choice import _compile as _choice_patterns
from reflectevo.verify.math import last_boxed
from reflectevo.verify.number import _CUES as _NUMBER_CUES, _NUMBER
from reflectevo.verify.text import _CUE as _TEXT_CUE

_CLOSED_FENCE = re.compile(r"```[^\n]*\n.*?```", re.DOTALL)
_ANSWER_CUE = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*\S", re.I)


def complete_part(response: str) -> str:
    """The response without its cut-off last line."""
    cut = response.rstrip(" \t").rfind("\n")
    return response[:cut] if cut >= 0 else ""


def states_an_answer(text: str, answer_type: str, letters: str = "ABCD") -> bool:
    """Whether `text` holds a complete answer statement of `answer_type` (not a fallback reading)."""
    if not text.strip():
        return False
    if answer_type == "code":
        return bool(_CLOSED_FENCE.search(text))
    if answer_type == "math":
        return last_boxed(text) is not None or bool(_ANSWER_CUE.search(text))
    if answer_type == "number":
        for cue in _NUMBER_CUES:
            for match in cue.finditer(text):
                rest = text[match.end():].lstrip()
                if _NUMBER.match(rest.replace("**", "").lstrip()):
                    return True
        return False
    if answer_type == "choice":
        # The explicit forms only: \boxed{B}, "answer is B", "I choose B" (not a bare letter line).
        return any(pattern.search(text) for pattern, _ in _choice_patterns(letters)[:3])
    if answer_type == "text":
        return any(text[m.end():].strip() for m in _TEXT_CUE.finditer(text))
    return bool(_ANSWER_CUE.search(text))
