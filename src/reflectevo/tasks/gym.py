"""Procedurally generated tasks from reasoning-gym (Apache-2.0): `gym:<dataset>`.

Generated offline from a seed, each with its own exact scorer, and with a difficulty knob: the right
kind of task to show a 135M model learning (most public benchmarks are far above its level).
`arith` is a preset: short sums of small numbers.
"""

from __future__ import annotations

import hashlib
import json
import re

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.registry import register_task
from reflectevo.verify.number import extract_number

# One generated pool, split by a hash of each question's split key: test questions never reach train,
# and both splits follow the same distribution (held-out by seed would leave the easy, often-repeated
# questions to whichever split claims them first). Validation is carved from train the same way
# (tasks/base.py). "Disjoint" means no two splits share a key: for commutative tasks such as `add`
# the key is the sorted operands, so 3 + 4 and 4 + 3 always land in the same split.
POOL_SEED = 1
POOL_SIZE = 2500
TEST_PERCENT = 20


def split_of(key: str) -> str:
    return "test" if int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100 < TEST_PERCENT else "train"


def operands_key(question: str) -> str:
    """The numbers of a sum in ascending order: one key for every order of the same terms."""
    return "+".join(sorted(re.findall(r"\d+", question), key=int))


NUMERIC_ANSWER_FORMAT = 'End your response with "The answer is: N" where N is a number.'

_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\**\s*(.+)", re.IGNORECASE)


class GymTask(Task):
    answer_type = "gym"
    splits = ("train", "test")
    instruction = "Solve the problem. Think step by step."
    answer_format = 'End your response with "The answer is: X".'

    def __init__(self, dataset: str, data_path=None, few_shot: int = 0, name: str | None = None,
                 pool_size: int = POOL_SIZE, numeric: bool = False, instruction: str | None = None,
                 answer_format: str | None = None, commutative: bool = False, data_split: str | None = None,
                 **options):
        if data_path is not None:
            raise InputError(f"task {name or 'gym:' + dataset!r} generates its problems; a data file "
                             f"(--data {data_path}) does not apply to it")
        super().__init__(None, few_shot, data_split)
        self.commutative = commutative
        # Numeric datasets: take the number the way GSM8K does (answer cue, else the last number), so
        # "1 + 5 = 6" is read as 6 rather than as a whole line the scorer cannot match.
        self.numeric = numeric
        if numeric:
            self.answer_type = "number"
            self.answer_format = NUMERIC_ANSWER_FORMAT
        if instruction is not None:
            self.instruction = instruction
        if answer_format is not None:
            self.answer_format = answer_format
        try:
            import reasoning_gym  # noqa: F401
        except ModuleNotFoundError:
            raise InputError(f"task 'gym:{dataset}' needs reasoning-gym: pip install reasoning-gym") from None
        self.dataset = dataset
        self.options = options
        self.pool_size = pool_size
        self.name = name or f"gym:{dataset}"
        self.description = f"reasoning-gym {dataset} {options or ''}".strip()

    def _generate(self):
        import reasoning_gym

        try:
            return reasoning_gym.create_dataset(self.dataset, size=self.pool_size, seed=POOL_SEED, **self.options)
        except (KeyError, ValueError, TypeError, AssertionError) as exc:
            raise InputError(f"task {self.name!r}: reasoning-gym cannot build {self.dataset!r} "
                             f"with {self.options}: {exc}") from exc

    def split_key(self, problem: Problem) -> str:
        return operands_key(problem.question) if self.commutative else problem.question

    def read(self, split: str) -> list[Problem]:
        problems, seen = [], set()
        for entry in self._generate():
            key = operands_key(entry["question"]) if self.commutative else entry["question"]
            if entry["question"] in seen or split_of(key) != split:
                continue
            seen.add(entry["question"])
            problems.append(Problem(id=f"{self.name}/{split}/{len(problems)}", task=self.name, split=split,
                                    question=entry["question"], gold=str(entry["answer"]),
                                    meta={"entry": json.loads(json.dumps(entry, default=str))}))
        return problems

    def verify(self, problem: Problem, response: str) -> Verdict:
        if self.numeric:
            extracted = extract_number(response)
            if extracted is None:
                return Verdict(correct=False, extracted=None, extraction_failed=True)
            return self._judge(problem, extracted)
        matches = _ANSWER.findall(response)
        lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
        if not matches and not lines:
            return Verdict(correct=False, extracted=None, extraction_failed=True)
        return self._judge(problem, (matches[-1] if matches else lines[-1]).strip().rstrip(".").strip("*$ "))

    def _judge(self, problem: Problem, extracted: str) -> Verdict:
        score = self._scorer().score_answer(answer=extracted, entry=problem.meta["entry"])
        correct = score >= 1.0
        return Verdict(correct=correct, extracted=extracted, feedback="correct" if correct else "incorrect",
                       details={"score": score})

    def _scorer(self):
        if not hasattr(self, "_dataset_for_scoring"):
            import reasoning_gym

            self._dataset_for_scoring = reasoning_gym.create_dataset(self.dataset, size=1, seed=0, **self.options)
        return self._dataset_for_scoring

    def describe(self) -> dict:
        return {**super().describe(), "dataset": self.dataset, "options": self.options, "numeric": self.numeric,
                "pool_seed": POOL_SEED, "pool_size": self.pool_size, "test_percent": TEST_PERCENT,
                "split_key": "sorted operands" if self.commutative else "question"}


@register_task("arith", "sums of 2-3 small numbers from reasoning-gym chain_sum; exact scorer; the quickstart's task")
def arith(data_path=None, few_shot: int = 0, data_split: str | None = None) -> GymTask:
    """Sums and differences of two or three small numbers: within reach of a 135M model, not trivial."""
    return GymTask("chain_sum", data_path, few_shot, name="arith", numeric=True, min_terms=2, max_terms=3,
                   min_digits=1, max_digits=2, data_split=data_split)


@register_task("add", "sums of two numbers below 100, number-only answers (reasoning-gym); exact scorer; the "
                      "evidence task")
def add(data_path=None, few_shot: int = 0, data_split: str | None = None) -> GymTask:
    """Sums of two numbers below 100, answered directly.

    The 135M model gets about 10% of these right when told to think step by step (it talks until the
    token budget runs out) and about 37% when asked for the number only: a task with failures to
    reflect on and skill to build on, which is what reflection learning needs to show anything.
    """
    return GymTask("basic_arithmetic", data_path, few_shot, name="add", numeric=True, instruction="",
                   answer_format="Reply with only the number.", commutative=True, data_split=data_split,
                   operators=("+",), min_terms=2, max_terms=2,
                   min_digits=1, max_digits=2, allow_negation=False, allow_parentheses=False)
