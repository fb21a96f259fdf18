"""MBPP: write a Python function that passes the task's asserts, run in the sandbox (bundled, CC BY 4.0).

Splits by task_id (the MBPP paper's): prompt 1-10 (few-shot examples), test 11-510 (the ReflectEvo
test set), validation 511-600, train 601-974. As in MBPP's own prompt, the question shows the three
test asserts, so the model knows the function's name and signature; the challenge tests are not used.
The feedback of a failure is the failing assert with the value actually returned, or the error with the
line of the code that raised it (at most three lines, 300 characters; see verify/sandbox.py).
"""

from __future__ import annotations

import functools

from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.data_files import bundled, read_records, require
from reflectevo.tasks.registry import register_task
from reflectevo.verify.code import function_names, judge_code
from reflectevo.verify.sandbox import Limits

SPLIT_RANGES = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
FEW_SHOT_IDS = (2, 3, 4)  # the MBPP paper's few-shot prompt tasks


@functools.lru_cache(maxsize=None)
def _rows(path: str) -> tuple[tuple[int, dict], ...]:
    from pathlib import Path

    return tuple(read_records(Path(path)))


def tests_block(tests: list[str], setup: str = "") -> str:
    text = "Your code should pass these tests:\n" + "\n".join(t.strip() for t in tests)
    if setup.strip():
        text += "\nThe tests run after this setup code:\n" + setup.strip()
    return text


@register_task("mbpp", "MBPP Python programming problems; judged by running the task's asserts in a "
                       "sandbox (bundled, CC BY 4.0)")
class MBPP(Task):
    answer_type = "code"
    splits = ("test", "train", "validation", "prompt")
    instruction = "You are an expert Python programmer. Write a Python function for the task."
    answer_format = "Give the complete function in one ```python code block."
    limits = Limits()

    def read(self, split: str) -> list[Problem]:
        # A user's file is the whole of the split it replaces; the bundled file is cut by task_id ranges.
        path = self.data_file(split)
        low, high = (float("-inf"), float("inf")) if path else SPLIT_RANGES[split]
        path = path or bundled("mbpp/mbpp.jsonl.gz")
        problems = []
        for lineno, obj in _rows(str(path)):
            task_id = int(require(obj, "task_id", path, lineno))
            if not low <= task_id <= high:
                continue
            tests = [t.strip() for t in require(obj, "test_list", path, lineno)]
            setup = obj.get("test_setup_code") or ""
            problems.append(Problem(
                id=f"mbpp/{split}/{task_id}", task=self.name, split=split,
                question=require(obj, "text", path, lineno),
                gold=str(require(obj, "code", path, lineno)).replace("\r\n", "\n"),
                meta={"task_id": task_id, "tests": tests, "setup": setup,
                      "entry_point": (function_names(tests) or [None])[0]}))
        return problems

    def question_text(self, problem: Problem) -> str:
        return f"{problem.question}\n{tests_block(problem.meta['tests'], problem.meta.get('setup', ''))}"

    def examples(self) -> list[tuple[str, str]]:
        if not self.few_shot:
            return []
        prompt = {int(p.meta["task_id"]): p for p in MBPP().read("prompt")}
        shots = []
        for task_id in FEW_SHOT_IDS[: self.few_shot]:
            problem = prompt[task_id]
            code = problem.gold.replace("\r\n", "\n").strip()
            shots.append((self.question_text(problem), f"```python\n{code}\n```"))
        return shots

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_code(response, problem.meta["tests"], problem.meta.get("setup", ""), self.limits)
