"""MATH tasks: splits, golds, few-shot, verification."""

import pytest

from reflectevo.tasks import get_task
from reflectevo.verify.math import last_boxed


@pytest.fixture(scope="module")
def tasks():
    return get_task("math"), get_task("math500")


def test_splits_and_no_leak(tasks):
    paper, math500 = tasks
    assert len(paper.load("test")) == 500 and len(math500.load("test")) == 500
    train, validation = paper.load("train"), paper.load("validation")
    # 5000 minus the union of the two test sets (48 shared), 10% of it carved out for validation
    assert len(train) + len(validation) == 4048 and 350 < len(validation) < 450
    assert [p.question for p in math500.load("train")] == [p.question for p in train]
    held_out = {" ".join(p.question.split()) for t in tasks for p in t.load("test")}
    assert not held_out & {" ".join(p.question.split()) for p in train + validation}
    assert not {p.question for p in train} & {p.question for p in validation}


def test_gold_is_last_boxed(tasks):
    paper, math500 = tasks
    for problem in paper.load("test")[:50] + math500.load("test")[:50]:
        assert problem.gold == last_boxed(problem.meta["solution"])


@pytest.mark.parametrize("name", ["math", "math500"])
def test_golds_verify_against_themselves_sample(name):
    task = get_task(name)
    for problem in task.load("test")[::10]:
        verdict = task.verify(problem, f"Therefore the answer is $\\boxed{{{problem.gold}}}$.")
        assert verdict.correct, (problem.id, problem.gold, verdict)


@pytest.mark.slow
@pytest.mark.parametrize("name,split", [("math", "test"), ("math500", "test"), ("math", "train")])
def test_all_golds_verify_against_themselves(name, split):
    task = get_task(name)
    bad = [p.id for p in task.load(split) if not task.verify(p, f"\\boxed{{{p.gold}}}").correct]
    assert not bad


def test_wrong_answers_fail(tasks):
    paper, _ = tasks
    problem = paper.load("test")[0]  # gold -5
    assert problem.gold == "-5"
    for wrong in ("\\boxed{5}", "\\boxed{-3}", "The answer is $-4$"):
        verdict = paper.verify(problem, wrong)
        assert not verdict.correct and not verdict.extraction_failed
    assert paper.verify(problem, "no idea").extraction_failed


def test_few_shot_comes_from_train(tasks):
    paper, _ = tasks
    task = get_task("math", few_shot=4)
    shots = task.examples()
    assert len(shots) == 4 and all("\\boxed" in answer for _, answer in shots)
    tests = {p.question for t in tasks for p in t.load("test")}
    assert not tests & {q for q, _ in shots}
    assert "\\boxed{}" in task.prompt(paper.load("test")[0])[0]["content"]
