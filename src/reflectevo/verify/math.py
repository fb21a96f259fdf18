"""LaTeX math answers judged by mathematical equivalence (math-verify), never by string equality.

10 = 10.0, \\frac{1}{2} = 0.5 = 1/2, \\dfrac = \\frac, intervals, sets and tuples, units and \\text{}
stripped, "x = 5" = 5. The gold of a MATH problem is the content of the last \\boxed{} of its solution.
"""

from __future__ import annotations

import re
import threading

from reflectevo.records import Verdict

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}, or `\\boxed 5`) in `text`, nested braces kept."""
    starts = [(text.rfind(cmd), cmd) for cmd in _BOX_COMMANDS]
    start, cmd = max(starts)
    if start < 0:
        return None
    i = start + len(cmd)
    if text.startswith(" ", i) and not text[i:].lstrip().startswith("{"):
        # "\boxed 5" form: up to the next space or "$"
        match = re.match(r"\s+([^\s$]+)", text[i:])
        return match.group(1) if match else None
    while i < len(text) and text[i].isspace():
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        char = text[j]
        if char == "\\":
            j += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
        j += 1
    return None  # unbalanced: the response was cut off inside the box


def _timeouts() -> dict:
    # math-verify enforces its timeouts with SIGALRM, which only the main thread may use.
    main = threading.current_thread() is threading.main_thread()
    return {"parsing_timeout": 5 if main else None}


def _verify_timeouts() -> dict:
    main = threading.current_thread() is threading.main_thread()
    return {"timeout_seconds": 5 if main else None}


def _parse(text: str):
    from math_verify import parse  # imported lazily: sympy is slow to import

    try:
        return parse(text, **_timeouts())
    except Exception:  # noqa: BLE001 - math-verify raises on pathological input
        return []


_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")


def normalise_text_answer(answer: str) -> str:
    """A string form for answers sympy cannot read (words, letters): \\text{} unwrapped, $ and spaces
    and trailing dots removed, lower case."""
    answer = _TEXT_WRAPPERS.sub(r"\1", answer)
    answer = answer.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\ ", "")
    answer = re.sub(r"\s+", "", answer).rstrip(".").lower()
    return answer


def gold_answer(gold: str) -> str:
    """The gold as math-verify expects it: a bare expression is wrapped in \\boxed{}."""
    return gold if "\\boxed" in gold else f"\\boxed{{{gold}}}"


def extract_math(response: str) -> str | None:
    """The answer math-verify reads in `response` (its matched text), or None."""
    parsed = _parse(response)
    if parsed:
        return str(parsed[-1])
    boxed = last_boxed(response)
    return boxed if boxed else None


def judge_math(response: str, gold: str) -> Verdict:
    from math_verify import verify

    gold_parsed = _parse(gold_answer(gold))
    pred_parsed = _parse(response)
    boxed = last_boxed(response)
    if not pred_parsed and not boxed:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect")
    extracted = str(pred_parsed[-1]) if pred_parsed else boxed
    correct = False
    if gold_parsed and pred_parsed:
        try:
            correct = bool(verify(gold_parsed, pred_parsed, **_verify_timeouts()))
        except Exception:  # noqa: BLE001
            correct = False
    method = "math-verify"
    if not correct:
        # Non-mathematical golds (names, words, option letters) compare as normalised text.
        candidate = boxed if boxed is not None else extracted
        if candidate is not None and normalise_text_answer(candidate) == normalise_text_answer(gold) \
                and normalise_text_answer(gold):
            correct, method = True, "text"
    return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect",
                   details={"method": method})
