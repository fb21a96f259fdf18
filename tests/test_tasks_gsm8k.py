"""GSM8K: bundled splits, every gold verifying against itself."""

from reflectevo.tasks import get_task


def test_splits_and_golds():
    task = get_task("gsm8k")
    test, train, validation = task.load("test"), task.load("train"), task.load("validation")
    # Validation is carved from GSM8K's 7,473 train problems (10% by hash), disjoint from train.
    assert (len(test), len(train) + len(validation)) == (1319, 7473) and 700 < len(validation) < 800
    assert not {p.question for p in train} & {p.question for p in validation}
    assert {p.split for p in validation} == {"validation"} and validation[0].id.startswith("gsm8k/validation/")
    ids = {p.id for p in train}
    assert len(ids) == len(train) and "gsm8k/train/0" in ids  # train ids are the file's own indices
    for problem in test + train + validation:
        assert task.verify(problem, f"{problem.meta['solution']}\nThe answer is: {problem.gold}").correct
    for problem in test[:50]:
        wrong = str(int(float(problem.gold)) + 1)
        verdict = task.verify(problem, f"The answer is: {wrong}")
        assert not verdict.correct and not verdict.extraction_failed


def test_few_shot_from_train():
    task = get_task("gsm8k", few_shot=2)
    content = task.prompt(task.load("test")[0])[0]["content"]
    assert content.count("The answer is:") >= 2
