"""MBPP: splits, prompts, and every reference solution passing its own tests in the sandbox."""

import hashlib
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


# sha256 of json.dumps([[task_id, text, code (CRLF -> LF), [stripped test asserts], test_setup_code], ...])
# over all 974 MBPP tasks in task_id order, computed from the public mbpp_full.jsonl (CC BY 4.0): the bundled
# copy, as the loader reads it, must hold exactly those tasks, asserts and references.
MBPP_FULL_SHA256 = "36bda6e7c45204ea87a5a4851bf66a102d1df4db183e68191a23507821d94ef1"


def test_bundled_copy_matches_the_public_mbpp(mbpp):
    problems = {p.meta["task_id"]: p for split in mbpp.splits for p in mbpp.load(split)}
    assert sorted(problems) == list(range(1, 975))
    rows = [[k, p.question, p.gold, p.meta["tests"], p.meta["setup"]] for k, p in sorted(problems.items())]
    assert hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest() == MBPP_FULL_SHA256
    # Spot checks, verbatim from the public file, across the splits.
    assert problems[1].meta["tests"][0] == "assert min_cost([[1, 2, 3], [4, 8, 2], [1, 5, 3]], 2, 2) == 8"
    assert problems[367].meta["setup"].startswith("root = Node(1) \r\nroot.left = Node(2) \r\n")
    assert problems[974].meta["tests"][2] == "assert min_sum_path([[ 3 ], [6, 4 ], [5, 2, 7 ]]) == 9"


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
