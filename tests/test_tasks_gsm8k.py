"""GSM8K: bundled splits, every gold verifying against itself."""

from reflectevo.tasks import get_task


def test_splits_and_golds():
    task = get_task("gsm8k")
    test, train = task.load("test"), task.load("train")
    assert (len(test), len(train)) == (1319, 7473)
    for problem in test + train:
        assert task.verify(problem, f"{problem.meta['solution']}\nThe answer is: {problem.gold}").correct
    for problem in test[:50]:
        wrong = str(int(float(problem.gold)) + 1)
        verdict = task.verify(problem, f"The answer is: {wrong}")
        assert not verdict.correct and not verdict.extraction_failed


def test_few_shot_from_train():
    task = get_task("gsm8k", few_shot=2)
    content = task.prompt(task.load("test")[0])[0]["content"]
    assert content.count("The answer is:") >= 2
