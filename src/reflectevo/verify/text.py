"""Short free-text answers, scored as SQuAD does: normalised exact match, with token F1 as a detail.

Normalisation (the SQuAD v1.1 script's): lower case, punctuation removed, articles (a, an, the)
removed, whitespace collapsed. The answer is the text after the last answer cue ("The answer is:",
"Answer:"), up to the end of its line; a response without a cue counts as the answer only when it is
short (one line of at most 12 words), otherwise it is an extraction failure.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

from reflectevo.records import Verdict

_CUE = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|would\s+be|should\s+be)\s*:?", re.I)
_PUNCT = set(string.punctuation)
SHORT_ANSWER_WORDS = 12


def normalize_answer(text: str) -> str:
    """SQuAD normalisation."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def f1_score(prediction: str, gold: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def _clean(answer: str) -> str:
    answer = answer.strip()
    answer = re.sub(r"^\**\s*|\s*\**$", "", answer)  # markdown bold
    answer = answer.strip().strip("\"'`“”‘’").strip()
    answer = re.sub(r"[\.\!]+$", "", answer).strip()
    return answer


def extract_text_answer(response: str) -> str | None:
    if not response or not response.strip():
        return None
    matches = list(_CUE.finditer(response))
    if matches:
        rest = response[matches[-1].end():]
        line = rest.strip().split("\n", 1)[0] if rest.strip() else ""
        answer = _clean(line)
        return answer or None
    stripped = response.strip()
    if "\n" not in stripped and len(stripped.split()) <= SHORT_ANSWER_WORDS:
        return _clean(stripped) or None
    return None


def judge_text(response: str, gold: str, aliases: Sequence[str] = ()) -> Verdict:
    """Exact match after normalisation against the gold or any alias; details hold the best F1."""
    extracted = extract_text_answer(response)
    if extracted is None:
        return Verdict(correct=False, extracted=None, extraction_failed=True, feedback="incorrect",
                       details={"f1": 0.0, "exact_match": False})
    golds = [gold, *aliases]
    exact = any(normalize_answer(extracted) == normalize_answer(g) for g in golds)
    f1 = max(f1_score(extracted, g) for g in golds)
    return Verdict(correct=exact, extracted=extracted, feedback="correct" if exact else "incorrect",
                   details={"f1": round(f1, 4), "exact_match": exact})
