"""LogiQA and BIG-bench: user-path data, letters, every gold verifying against itself."""

import re

import pytest

from reflectevo.errors import InputError
from reflectevo.tasks import get_task


def test_missing_data_says_how_to_provide_it(monkeypatch):
    monkeypatch.delenv("REFLECTEVO_DATA_DIR", raising=False)
    for name in ("logiqa", "bigbench", "bigbench_free"):
        task = get_task(name)  # building the task needs no data
        with pytest.raises(InputError, match="REFLECTEVO_DATA_DIR"):
            task.load("test")


# The fixtures (tests/data) are written for the tests in the reference layouts; their golds, in order:
LOGIQA_GOLDS = ["C", "A", "D", "B", "A", "C"]  # data_source/logiqa_test.jsonl (ids 11-16)
TXT_GOLDS = ["A", "C", "B", "D"]  # logiqa/Test.txt, the original 8-lines-per-item layout


def test_logiqa_jsonl(logiqa_path):
    task = get_task("logiqa", data_path=logiqa_path)
    problems = task.load("test")
    assert len(problems) == 6
    assert [p.gold for p in problems] == LOGIQA_GOLDS  # lower-case a-d in the file
    assert [p.id for p in problems] == [f"logiqa/test/{k}" for k in range(11, 17)]
    assert problems[0].question.endswith("\nD.The heating works") and problems[0].meta["letters"] == "ABCD"
    for problem in problems:
        assert task.verify(problem, f"The answer is: {problem.gold}").correct
        assert task.verify(problem, f"The answer is ({problem.gold.lower()})").correct
        wrong = "ABCD"[("ABCD".index(problem.gold) + 1) % 4]
        assert not task.verify(problem, f"The answer is: {wrong}").correct


def test_logiqa_original_txt_and_folder(data_dir, monkeypatch):
    task = get_task("logiqa", data_path=data_dir / "logiqa" / "Test.txt")
    problems = task.load("test")
    assert len(problems) == 4 and problems[0].gold == "A" and "\nD." in problems[0].question
    assert [p.gold for p in problems] == TXT_GOLDS
    # context, question and the four options, one per line
    lines = (data_dir / "logiqa" / "Test.txt").read_text().splitlines()
    assert lines[9] == "c" and problems[1].question == "\n".join(lines[10:16])
    assert [p.id for p in problems] == [f"logiqa/test/{k}" for k in range(4)]
    # A data folder: logiqa_test.jsonl serves the test split; a logiqa/ subfolder is preferred when present.
    monkeypatch.setenv("REFLECTEVO_DATA_DIR", str(data_dir / "data_source"))
    assert [p.gold for p in get_task("logiqa").load("test")] == LOGIQA_GOLDS
    with pytest.raises(InputError, match="Train.txt"):
        get_task("logiqa").load("train")
    monkeypatch.setenv("REFLECTEVO_DATA_DIR", str(data_dir))
    assert [p.gold for p in get_task("logiqa").load("test")] == TXT_GOLDS


def test_logiqa_malformed_jsonl_names_the_line(data_dir):
    path = data_dir / "malformed.jsonl"
    with pytest.raises(InputError, match=rf"{re.escape(str(path))}:3: malformed JSON"):
        get_task("logiqa", data_path=path).load("test")


@pytest.fixture(scope="module")
def bigbench_path(data_dir):
    return data_dir / "data_source" / "bigbench_test.jsonl"


def test_bigbench_mcq(bigbench_path):
    task = get_task("bigbench", data_path=bigbench_path)
    problems = task.load("test")
    assert len(problems) == 7  # the rows with an id; the free-text rows between them are skipped
    assert [p.id for p in problems] == [f"bigbench/test/{k}" for k in range(9001, 9008)]
    assert [p.gold for p in problems] == ["A", "B", "A", "C", "A", "B", "C"]
    assert [p.meta["letters"] for p in problems] == ["ABC", "AB", "ABC", "ABC", "AB", "ABC", "ABC"]
    for problem in problems:
        assert task.verify(problem, f"Reasoning...\nThe answer is: {problem.gold}").correct
        wrong = [l for l in problem.meta["letters"] if l != problem.gold][0]
        assert not task.verify(problem, f"The answer is: {wrong}").correct
    assert task.verify(problems[0], "The answer is: D").extraction_failed
    assert task.verify(problems[1], "The answer is: C").extraction_failed  # a yes/no row offers A and B only


def test_bigbench_free(bigbench_path):
    task = get_task("bigbench_free", data_path=bigbench_path)
    problems = task.load("test")
    assert len(problems) == 3  # the rows without an id
    assert [p.gold for p in problems] == ["9 pm", "a flea market", "yellow"]
    assert [p.meta["line"] for p in problems] == [3, 6, 9]
    for problem in problems:
        verdict = task.verify(problem, f"The answer is: {problem.gold}")
        assert verdict.correct and verdict.details["f1"] == 1.0
    verdict = task.verify(problems[0], "The answer is: a telephoto zoom")
    assert not verdict.correct and verdict.details["f1"] == 0.0
    verdict = task.verify(problems[1], "The answer is: a street market")  # one word of two shared
    assert not verdict.correct and 0.0 < verdict.details["f1"] < 1.0


def test_every_builtin_is_listed():
    from reflectevo.tasks import list_tasks

    assert {"logiqa", "math", "math500", "gsm8k", "mbpp", "bigbench", "bigbench_free"} <= set(list_tasks())
