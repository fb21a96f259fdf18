"""MBPP: splits, prompts, and every reference solution passing its own tests in the sandbox."""

import json
import time

import pytest

from reflectevo.tasks import get_task


@pytest.fixture(scope="module")
def mbpp():
    return get_task("mbpp")


def test_splits(mbpp):
    sizes = {split: len(mbpp.load(split)) for split in mbpp.splits}
    assert sizes == {"test": 500, "train": 374, "validation": 90, "prompt": 10}
    ids = [p.meta["task_id"] for p in mbpp.load("test")]
    assert ids[0] == 11 and ids[-1] == 510


def test_prompt_shows_the_tests_and_few_shot(mbpp):
    task = get_task("mbpp", few_shot=3)
    problem = task.load("test")[0]
    content = task.prompt(problem)[0]["content"]
    for test in problem.meta["tests"]:
        assert test in content
    assert content.count("```python\n") == 3  # the three MBPP few-shot examples (tasks 2, 3, 4)
    assert problem.meta["entry_point"] == "remove_Occ"


def test_bundled_copy_matches_shared_data(mbpp, shared_data):
    rows = [json.loads(line) for line in (shared_data / "mbpp" / "mbpp_full.jsonl").open()]
    assert len(rows) == 974
    problems = {p.meta["task_id"]: p for split in mbpp.splits for p in mbpp.load(split)}
    assert len(problems) == 974
    assert all(problems[r["task_id"]].meta["tests"] == [t.strip() for t in r["test_list"]] for r in rows)


def _check_references(task, problems):
    responses = [f"```python\n{p.gold}\n```" for p in problems]
    started = time.monotonic()
    verdicts = task.verify_many(problems, responses, workers=2)
    failures = [(p.id, v.feedback) for p, v in zip(problems, verdicts) if not v.correct]
    return failures, time.monotonic() - started


def test_reference_solutions_pass_sample(mbpp):
    problems = [p for split in ("test", "train") for p in mbpp.load(split)][::14]  # 62 tasks
    problems += [p for p in mbpp.load("test") if p.meta["task_id"] in (367,)]  # setup code
    failures, _ = _check_references(mbpp, problems)
    assert not failures


@pytest.mark.slow
def test_all_974_reference_solutions_pass(mbpp):
    problems = [p for split in mbpp.splits for p in mbpp.load(split)]
    failures, seconds = _check_references(mbpp, problems)
    assert len(problems) == 974
    assert not failures, failures[:5]
    print(f"974 MBPP references verified in {seconds:.1f} s")


def test_wrong_solutions_fail_with_feedback(mbpp):
    problems = mbpp.load("test")[:3]
    # each problem answered with the next problem's reference: wrong function entirely
    for problem, other in zip(problems, problems[1:] + problems[:1]):
        verdict = mbpp.verify(problem, f"```python\n{other.gold}\n```")
        assert not verdict.correct and not verdict.extraction_failed
        assert verdict.feedback.startswith("Test 1 of 3 failed")
    off_by_one = problems[0].gold.replace("return s", "return s + 'x'")
    verdict = mbpp.verify(problems[0], f"```python\n{off_by_one}\n```")
    assert "returned 'heox'" in verdict.feedback
    assert mbpp.verify(problems[0], "I don't know.").extraction_failed
