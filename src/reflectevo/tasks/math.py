"""MATH competition problems: LaTeX answers judged by equivalence (bundled, MIT).

Two tasks share one train pool:
- `math`: test = the 500-problem MATH test sample used by the ReflectEvo paper;
- `math500`: test = MATH-500 (Lightman et al.), the common modern benchmark subset.
Train (a pool for generating reflection data) = the full 5,000-problem MATH test set minus both
test sets, so training on it never leaks a problem of either. Gold = the last \\boxed{} of the solution.
"""

from __future__ import annotations

import functools

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.data_files import bundled, read_records, require
from reflectevo.tasks.registry import register_task
from reflectevo.verify.math import judge_math, last_boxed

PAPER_SAMPLE = "math/reflectevo_math500_sample.jsonl.gz"
MATH500 = "math/math500_test.jsonl.gz"
FULL = "math/math_test_full.jsonl.gz"
FEW_SHOT_COUNT = 4


def _key(problem: str) -> str:
    return " ".join(problem.split())


@functools.lru_cache(maxsize=None)
def _rows(relative: str) -> tuple[tuple[int, dict], ...]:
    return tuple(read_records(bundled(relative)))


def _test_keys() -> set[str]:
    return {_key(obj["problem"]) for rel in (PAPER_SAMPLE, MATH500) for _, obj in _rows(rel)}


class _MathTask(Task):
    answer_type = "math"
    splits = ("test", "train")
    instruction = "Solve the math problem. Reason step by step."
    answer_format = "Put your final answer within \\boxed{}."
    test_file = PAPER_SAMPLE

    def read(self, split: str) -> list[Problem]:
        if self.data_file(split) is not None:
            return self._problems(read_records(self.data_path), split, str(self.data_path))
        if split == "test":
            return self._problems(_rows(self.test_file), split, self.test_file)
        held_out = _test_keys()
        rows = [(lineno, obj) for lineno, obj in _rows(FULL) if _key(obj["problem"]) not in held_out]
        return self._problems(rows, split, FULL)

    def _problems(self, rows, split: str, source: str) -> list[Problem]:
        problems = []
        for index, (lineno, obj) in enumerate(rows):
            solution = require(obj, "solution", source, lineno)
            gold = obj.get("answer") or last_boxed(solution)
            if not gold:
                raise InputError(f"{source}:{lineno}: solution has no \\boxed{{}} answer")
            ident = obj.get("unique_id", "").removeprefix("test/").removesuffix(".json") or obj.get("idx", index)
            meta = {"solution": solution, "level": obj.get("level"),
                    "subject": obj.get("subject") or obj.get("type")}
            problems.append(Problem(id=f"{self.name}/{split}/{ident}", task=self.name, split=split,
                                    question=require(obj, "problem", source, lineno), gold=gold, meta=meta))
        return problems

    def examples(self) -> list[tuple[str, str]]:
        """Short Level-1 worked solutions from the train pool (never a test problem)."""
        if not self.few_shot:
            return []
        shots = []
        for problem in _few_shot_pool():
            shots.append((problem.question, problem.meta["solution"]))
        return shots[: self.few_shot]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_math(response, problem.gold)


@functools.lru_cache(maxsize=1)
def _few_shot_pool() -> tuple[Problem, ...]:
    pool = MathTask().load("train")  # never a validation or test problem
    chosen, subjects = [], set()
    for problem in pool:
        if problem.meta.get("level") != "Level 1" or len(problem.meta["solution"]) > 450:
            continue
        if problem.meta["subject"] in subjects or "[asy]" in problem.question + problem.meta["solution"]:
            continue
        subjects.add(problem.meta["subject"])
        chosen.append(problem)
        if len(chosen) == 8:
            break
    return tuple(chosen)


@register_task("math", "MATH competition problems, the ReflectEvo 500-problem test sample; LaTeX answers "
                       "judged by equivalence (bundled, MIT)")
class MathTask(_MathTask):
    test_file = PAPER_SAMPLE


@register_task("math500", "MATH-500 (Lightman et al.); LaTeX answers judged by equivalence (bundled, MIT)")
class Math500Task(_MathTask):
    test_file = MATH500
