"""Helpers shared by multiple-choice tasks: which option letters a question offers."""

from __future__ import annotations

import re

_OPTION_LINE = re.compile(r"^\s*\(?([A-H])[\.\)]\s*\S", re.M)


def option_letters(question: str, default: str = "ABCD") -> str:
    """The consecutive option letters listed in `question` ("A.", "B)", "(C) ..." at line starts)."""
    found = sorted(set(_OPTION_LINE.findall(question)))
    letters = ""
    for letter in "ABCDEFGH":
        if letter in found:
            letters += letter
        else:
            break
    return letters if len(letters) >= 2 else default
