"""LogiQA and BIG-bench: user-path data, letters, every gold verifying against itself."""

import pytest

from reflectevo.errors import InputError
from reflectevo.tasks import get_task


def test_missing_data_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("REFLECTEVO_DATA_DIR", raising=False)
    for name in ("logiqa", "bigbench", "bigbench_free"):
        task = get_task(name)  # building the task needs no data
        with pytest.raises(InputError, match="REFLECTEVO_DATA_DIR"):
            task.load("test")


def test_logiqa_jsonl(logiqa_path):
    task = get_task("logiqa", data_path=logiqa_path)
    problems = task.load("test")
    assert len(problems) == 500
    for problem in problems:
        assert task.verify(problem, f"The answer is: {problem.gold}").correct
        assert task.verify(problem, f"The answer is ({problem.gold.lower()})").correct
        wrong = "ABCD"[("ABCD".index(problem.gold) + 1) % 4]
        assert not task.verify(problem, f"The answer is: {wrong}").correct


def test_logiqa_original_txt_and_folder(shared_data, monkeypatch):
    task = get_task("logiqa", data_path=shared_data / "logiqa" / "Test.txt")
    problems = task.load("test")
    assert len(problems) == 651 and problems[0].gold == "A" and "\nD." in problems[0].question
    monkeypatch.setenv("REFLECTEVO_DATA_DIR", str(shared_data / "reflectevo" / "data_source"))
    assert len(get_task("logiqa").load("test")) == 500
    with pytest.raises(InputError, match="Train.txt"):
        get_task("logiqa").load("train")


@pytest.fixture(scope="module")
def bigbench_path(shared_data):
    return shared_data / "reflectevo" / "data_source" / "bigbench_test.jsonl"


def test_bigbench_mcq(bigbench_path):
    task = get_task("bigbench", data_path=bigbench_path)
    problems = task.load("test")
    assert len(problems) == 356
    assert {p.meta["letters"] for p in problems} <= {"AB", "ABC"}
    for problem in problems:
        assert task.verify(problem, f"Reasoning...\nThe answer is: {problem.gold}").correct
        wrong = [l for l in problem.meta["letters"] if l != problem.gold][0]
        assert not task.verify(problem, f"The answer is: {wrong}").correct
    assert task.verify(problems[0], "The answer is: D").extraction_failed


def test_bigbench_free(bigbench_path):
    task = get_task("bigbench_free", data_path=bigbench_path)
    problems = task.load("test")
    assert len(problems) == 144
    for problem in problems:
        verdict = task.verify(problem, f"The answer is: {problem.gold}")
        assert verdict.correct and verdict.details["f1"] == 1.0
    verdict = task.verify(problems[0], "The answer is: a telephoto zoom")
    assert not verdict.correct and verdict.details["f1"] == 0.0


def test_every_builtin_is_listed():
    from reflectevo.tasks import list_tasks

    assert {"logiqa", "math", "math500", "gsm8k", "mbpp", "bigbench", "bigbench_free"} <= set(list_tasks())
