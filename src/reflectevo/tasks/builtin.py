"""Built-in tasks. Importing this module registers them."""

from __future__ import annotations

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.data_files import bundled, read_records, require, user_data_path
from reflectevo.tasks.registry import register_task
from reflectevo.verify.choice import judge_choice
from reflectevo.verify.number import judge_number


def _check_split(task: Task, split: str) -> None:
    if split not in task.splits:
        raise InputError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")


@register_task("gsm8k", "GSM8K grade-school math word problems; numeric answer (bundled, MIT)")
class GSM8K(Task):
    name = "gsm8k"
    description = "GSM8K grade-school math word problems; numeric answer (bundled, MIT)"
    answer_type = "number"
    splits = ("train", "test")
    instruction = "Solve the math word problem. Think step by step, then give the final number."
    answer_format = 'End your response with "The answer is: N" where N is a number.'

    def load(self, split: str) -> list[Problem]:
        _check_split(self, split)
        path = self.data_path or bundled(f"gsm8k/{split}.jsonl.gz")
        problems = []
        for index, (lineno, obj) in enumerate(read_records(path)):
            answer = require(obj, "answer", path, lineno)
            if "####" not in answer:
                raise InputError(f"{path}:{lineno}: answer has no '#### N' final line")
            problems.append(Problem(id=f"gsm8k/{split}/{index}", task=self.name, split=split,
                                    question=require(obj, "question", path, lineno),
                                    gold=answer.split("####")[-1].strip().replace(",", ""),
                                    meta={"solution": answer.split("####")[0].strip()}))
        return problems

    def examples(self) -> list[tuple[str, str]]:
        # Worked examples from the train split, rewritten into the answer format above.
        shots = []
        for problem in self.load("train")[: self.few_shot]:
            steps = problem.meta["solution"]
            shots.append((problem.question, f"{steps}\nThe answer is: {problem.gold}"))
        return shots

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_number(response, problem.gold)


@register_task("logiqa", "LogiQA logical reasoning MCQ (A-D), the ReflectEvo 500 sample; data from --data (no licence)")
class LogiQA(Task):
    name = "logiqa"
    description = "LogiQA logical reasoning MCQ (A-D); data from --data (no licence, not bundled)"
    answer_type = "choice"
    splits = ("test",)
    instruction = "Read the passage and question, reason step by step, then choose one option."
    answer_format = 'End your response with "The answer is: X" where X is one of A, B, C, D.'

    def load(self, split: str) -> list[Problem]:
        _check_split(self, split)
        path = user_data_path(self.name, self.data_path, "logiqa_test.jsonl",
                              "LogiQA states no licence, so reflectevo does not redistribute it")
        problems = []
        for lineno, obj in read_records(path):
            gold = str(require(obj, "answer", path, lineno)).strip().upper()
            if gold not in ("A", "B", "C", "D"):
                raise InputError(f"{path}:{lineno}: answer {gold!r} is not one of A-D")
            problems.append(Problem(id=f"logiqa/{split}/{obj.get('id', lineno)}", task=self.name,
                                    split=split, question=require(obj, "question", path, lineno),
                                    gold=gold))
        return problems

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_choice(response, problem.gold, "ABCD")
