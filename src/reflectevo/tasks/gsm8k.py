"""GSM8K: grade-school math word problems with a numeric answer (bundled, MIT)."""

from __future__ import annotations

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.data_files import bundled, read_records, require
from reflectevo.tasks.registry import register_task
from reflectevo.verify.number import judge_number


@register_task("gsm8k", "GSM8K grade-school math word problems; numeric answer (bundled, MIT)")
class GSM8K(Task):
    answer_type = "number"
    splits = ("train", "test")
    instruction = "Solve the math word problem. Think step by step, then give the final number."
    answer_format = 'End your response with "The answer is: N" where N is a number.'

    def read(self, split: str) -> list[Problem]:
        path = self.data_file(split) or bundled(f"gsm8k/{split}.jsonl.gz")
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
        # Worked examples from the train split (never validation or test), in the answer format above.
        if not self.few_shot:
            return []
        shots = []
        for problem in GSM8K().load("train")[: self.few_shot]:
            steps = problem.meta["solution"]
            shots.append((problem.question, f"{steps}\nThe answer is: {problem.gold}"))
        return shots

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_number(response, problem.gold)
