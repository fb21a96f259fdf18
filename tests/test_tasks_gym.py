"""Generated tasks (reasoning-gym): exact scorers, held-out test problems, numeric extraction."""

import pytest

from reflectevo.errors import InputError
from reflectevo.tasks import get_task


def test_arith_gold_answers_verify_and_wrong_ones_fail():
    task = get_task("arith")
    problems = task.load("test")[:50]
    for p in problems:
        assert task.verify(p, f"Adding up step by step.\nThe answer is: {p.gold}").correct
        wrong = task.verify(p, f"The answer is: {int(p.gold) + 1}")
        assert not wrong.correct and not wrong.extraction_failed
    failed = task.verify(problems[0], "I am not sure.")
    assert failed.extraction_failed and not failed.correct


@pytest.mark.parametrize("response, correct", [
    ("1 + 5 = 6\n\nThe answer is: X.", True),      # the format's placeholder copied: the last number counts
    ("The answer is: **6**", True),
    ("the answer is 6.", True),
    ("1 + 5 = 7", False),
    ("The answer is: 6.0", True),
])
def test_arith_extraction(response, correct):
    task = get_task("arith")
    problem = next(p for p in task.load("test") if p.question.endswith("1 + 5 ="))
    assert task.verify(problem, response).correct is correct


def test_add_is_two_number_sums_with_exact_answers():
    task = get_task("add")
    # no instruction: the prompt is the question and the answer format, without an empty paragraph
    assert task.prompt(task.load("test")[0])[0]["content"] == "Question: Calculate 4 + 1.\n\nReply with only the number."
    for p in task.load("test")[:50] + task.load("train")[:50]:
        a, b = (int(x) for x in p.question.removeprefix("Calculate ").rstrip(".").split(" + "))
        assert 0 <= a < 100 and 0 <= b < 100 and int(p.gold) == a + b
        assert task.verify(p, f"{a} + {b} = {a + b}").correct
        assert not task.verify(p, f"The answer is: {a + b + 1}").correct


@pytest.mark.parametrize("name", ["arith", "add"])
def test_train_never_contains_a_test_question(name):
    task = get_task(name)
    test = {p.question for p in task.load("test")}
    train = task.load("train")
    assert len(train) > 500 and len(train) > len(task.load("test")) and not test & {p.question for p in train}
    assert task.load("test") == task.load("test")  # generated from a fixed seed


def test_any_gym_dataset_and_bad_names():
    task = get_task("gym:leg_counting")
    p = task.load("test")[0]
    assert task.verify(p, p.gold).correct
    with pytest.raises(InputError, match="no split 'dev'"):
        task.load("dev")
    with pytest.raises(InputError, match="reasoning-gym cannot build 'no_such_dataset'"):
        get_task("gym:no_such_dataset").load("test")


def test_add_splits_are_disjoint_up_to_operand_order():
    """a + b and b + a are one problem: they always land in the same split (train, validation or test)."""
    task = get_task("add")
    keys = {split: {task.split_key(p) for p in task.load(split)} for split in ("train", "validation", "test")}
    assert keys["train"] and keys["validation"] and keys["test"]
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    # Both orders of one sum exist in the pool, and they do share a key.
    questions = {p.question: p for s in ("train", "validation", "test") for p in task.load(s)}
    pairs = [(q, f"Calculate {b} + {a}.") for q in questions
             for a, b in [q.removeprefix("Calculate ").rstrip(".").split(" + ")] if a != b]
    twins = [(questions[q], questions[t]) for q, t in pairs if t in questions]
    assert len(twins) > 20
    assert all(p.split == twin.split for p, twin in twins)


def test_generated_tasks_take_no_data_file(tmp_path):
    with pytest.raises(InputError, match=r"task 'add' generates its problems; a data file .* does not apply"):
        get_task("add", data_path=tmp_path / "x.jsonl")
