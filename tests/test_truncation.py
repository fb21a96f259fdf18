"""Responses cut off by max_tokens: an unfinished final answer is an extraction failure, not a wrong
answer, unless a complete answer statement precedes it; truncation is counted apart."""

from __future__ import annotations

import pytest

from reflectevo.records import Problem
from reflectevo.report.metrics import Outcome, compute_metrics
from reflectevo.tasks import get_task
from reflectevo.verify.truncation import complete_part, states_an_answer


def problem(task, gold, **meta):
    return Problem(id=f"{task}/test/0", task=task, split="test", question="q", gold=gold, meta=meta)


def test_the_cut_off_line_is_never_judged():
    math = get_task("math")
    p = problem("math", "624")
    cut = "Step 1: 600 + 24.\nThe answer is 624.\nSo the final answer is \\boxed{6"
    verdict = math.judge(p, cut, "length")
    assert verdict.correct and verdict.truncated and verdict.extracted  # the earlier statement counts
    # Without a complete statement before the cut, it is an extraction failure (never "wrong").
    only_cut = "Step 1: 600 + 24 makes\n\\boxed{6"
    verdict = math.judge(p, only_cut, "length")
    assert verdict.extraction_failed and verdict.truncated and not verdict.correct
    assert "cut off" in verdict.feedback
    # The same text, finished, is judged as usual.
    assert not math.judge(p, "The answer is \\boxed{6}", "stop").truncated


@pytest.mark.parametrize("task, gold, text, counts, correct", [
    ("gsm8k", "72", "She sold 48 + 24.\nThe answer is: 72\nLet me check: 48 + 2", True, True),
    ("gsm8k", "72", "She sold 48 + 24 = 7", False, False),  # cut in the statement's own line
    ("gsm8k", "72", "48 clips in April.\n24 clips in May, so 48 + 24 = 72 in tot", False, False),  # no cue: no fallback
    ("logiqa", "B", "Option A fails.\nThe answer is: B\nTo double-check, option", True, True),
    ("logiqa", "B", "B\nBecause the passage sa", False, False),  # a bare letter line is a fallback reading
    ("mbpp", "", "```python\ndef f(x):\n    return x\n```\nThis works because", True, None),
    ("mbpp", "", "```python\ndef f(x):\n    return", False, False),
])
def test_answer_statements_per_answer_type(task, gold, text, counts, correct):
    t = get_task(task)
    assert states_an_answer(complete_part(text), t.answer_type) is counts
    if task == "mbpp":
        return
    verdict = t.judge(problem(task, gold, letters="ABCD"), text, "length")
    assert verdict.truncated and verdict.extraction_failed is (not counts) and verdict.correct is correct


def test_gym_number_task_and_no_newline():
    add = get_task("add")
    p = add.load("test")[0]
    assert add.judge(p, f"The answer is: {p.gold}\nand", "length").correct
    assert add.judge(p, p.gold, "length").extraction_failed  # one line, cut: nothing complete before it
    assert add.judge(p, p.gold, "stop").correct


def test_truncation_is_counted_apart_from_format_failures():
    outcomes = [Outcome(task="t", t1=False, t2_oracle=False, t1_extraction_failed=False, t1_truncated=True),
                Outcome(task="t", t1=False, t2_oracle=False, t1_extraction_failed=True, t1_truncated=False),
                Outcome(task="t", t1=True, t2_oracle=True)]
    m = compute_metrics(outcomes, resamples=0)["overall"]
    assert m["truncation_rate"]["t1"]["value"] == pytest.approx(1 / 3)
    assert m["extraction_failure_rate"]["t1"]["value"] == pytest.approx(1 / 3)
