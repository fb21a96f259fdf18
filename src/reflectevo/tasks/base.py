"""The Task interface: a loader (splits), a prompt format and a verifier. Tasks know nothing of backends."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from reflectevo.errors import InputError
from reflectevo.records import Messages, Problem, Verdict
from reflectevo.verify.truncation import complete_part, states_an_answer

# The feedback of an answer cut off before it ended: binary like "incorrect", and it says why.
TRUNCATED_FEEDBACK = "Your response was cut off before it gave a final answer."

# A task with a train split but no validation split of its own gets one carved from train: the problems
# whose split key hashes below this percentage. Generation reads train (which then excludes them), every
# decision reads validation, and the test split only reports (docs/tasks.md, "Splits").
VALIDATION_PERCENT = 10


class Task(ABC):
    """A named benchmark.

    Subclasses set the class attributes and implement `read` and `verify`. The default prompt is one
    user turn: the task's instruction, its few-shot examples and the question, ending with the
    answer format. Everything a prompt shows is data on the task, so reflection and correction
    prompts (built in `reflectevo.prompts`) can repeat the same answer format.
    """

    name: str = ""
    description: str = ""
    answer_type: str = ""  # choice | number | math | text | code
    # The splits the task reads itself; `split_names` adds a validation split carved from train.
    splits: tuple[str, ...] = ("test",)
    default_split: str = "test"
    # Shown before the question and repeated in the correction prompt.
    instruction: str = "Solve the problem step by step."
    answer_format: str = 'End your response with "The answer is: X".'
    # Version of prompt/verifier semantics; goes into results so numbers stay comparable.
    version: str = "1"

    def __init__(self, data_path: str | Path | None = None, few_shot: int = 0, data_split: str | None = None):
        self.data_path = Path(data_path) if data_path else None
        # A data file replaces exactly one split (default: test), so one file never serves as both
        # the problems a model trains on and the problems it is tested on.
        self.data_split = data_split or "test"
        self.few_shot = few_shot

    @abstractmethod
    def read(self, split: str) -> list[Problem]:
        """All problems of one of `splits`, in a stable order (subclasses implement this)."""

    def data_file(self, split: str) -> Path | None:
        """The user's data file when it serves `split`; None: the split comes from the task's own data."""
        return self.data_path if self.data_path is not None and split == self.data_split else None

    @property
    def carves_validation(self) -> bool:
        return "train" in self.splits and "validation" not in self.splits

    @property
    def split_names(self) -> tuple[str, ...]:
        return self.splits + (("validation",) if self.carves_validation else ())

    def split_key(self, problem: Problem) -> str:
        """What decides a problem's side of a hash split: its question (tasks with equivalent rewordings,
        such as a + b and b + a, return one key for all of them)."""
        return problem.question

    def in_carved_validation(self, problem: Problem) -> bool:
        digest = hashlib.sha256(f"validation:{self.split_key(problem)}".encode()).hexdigest()
        return int(digest, 16) % 100 < VALIDATION_PERCENT

    def load(self, split: str) -> list[Problem]:
        """All problems of `split`, in a stable order. Unknown split -> InputError.

        Where validation is carved from train, `train` leaves out the validation problems and
        `validation` is exactly those (relabelled); ids of train problems do not change.
        """
        self.check_split(split)
        if not (self.carves_validation and split in ("train", "validation")):
            return self.read(split)
        pool = self.read("train")
        if split == "train":
            return [p for p in pool if not self.in_carved_validation(p)]
        return [p.model_copy(update={"split": "validation", "id": p.id.replace("/train/", "/validation/", 1)})
                for p in pool if self.in_carved_validation(p)]

    @abstractmethod
    def verify(self, problem: Problem, response: str) -> Verdict:
        """Extract the answer from a model response and judge it against problem.gold."""

    def check_split(self, split: str) -> None:
        """InputError naming the task's splits when `split` is not one of them."""
        if split not in self.split_names:
            raise InputError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.split_names)}")

    def judge(self, problem: Problem, response: str, finish_reason: str = "stop") -> Verdict:
        """`verify`, minding a response cut off by max_tokens: its last line is unfinished, so only a
        complete answer statement before it counts, else the attempt is an extraction failure
        (verify/truncation.py). Either way the verdict says it was truncated."""
        if finish_reason != "length":
            return self.verify(problem, response)
        head = complete_part(response)
        if states_an_answer(head, self.answer_type, problem.meta.get("letters", "ABCD")):
            return self.verify(problem, head).model_copy(update={"truncated": True})
        return Verdict(correct=False, extracted=None, extraction_failed=True, truncated=True,
                       feedback=TRUNCATED_FEEDBACK)

    def verify_many(self, problems: Sequence[Problem], responses: Sequence[str], workers: int = 1,
                    finish_reasons: Sequence[str] | None = None) -> list[Verdict]:
        """`judge` over many (problem, response) pairs, in order; `workers` > 1 judges concurrently
        (worth it for code tasks, whose verdicts wait on sandbox processes)."""
        if len(problems) != len(responses):
            raise ValueError("problems and responses differ in length")
        reasons = list(finish_reasons) if finish_reasons is not None else ["stop"] * len(responses)
        if workers <= 1:
            return [self.judge(p, r, f) for p, r, f in zip(problems, responses, reasons)]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(self.judge, problems, responses, reasons))

    def examples(self) -> list[tuple[str, str]]:
        """Few-shot (question, worked answer) pairs; empty by default."""
        return []

    def question_text(self, problem: Problem) -> str:
        return problem.question

    def shots(self) -> list[tuple[str, str]]:
        """The few-shot examples shown in every prompt, read once (some tasks load a split for them)."""
        if getattr(self, "_shots", None) is None:
            self._shots = self.examples()[: self.few_shot] if self.few_shot else []
        return self._shots

    def prompt(self, problem: Problem) -> Messages:
        """The trial-1 message list for `problem`."""
        parts = [self.instruction]
        for question, answer in self.shots():
            parts.append(f"Question: {question}\nAnswer: {answer}")
        parts.append(f"Question: {self.question_text(problem)}")
        parts.append(self.answer_format)
        return [{"role": "user", "content": "\n\n".join(part for part in parts if part)}]

    def describe(self) -> dict:
        return {"name": self.name, "version": self.version, "answer_type": self.answer_type,
                "few_shot": self.few_shot, "data_path": str(self.data_path) if self.data_path else None,
                "data_split": self.data_split if self.data_path else None, "splits": list(self.split_names),
                "validation": f"{VALIDATION_PERCENT}% of train by hash" if self.carves_validation else None}
