"""BIG-bench, the ReflectEvo 500-row mix: `bigbench` (356 multiple-choice rows) and `bigbench_free`
(144 short free-text rows). Not bundled (data from a user path).

The rows come from VitaminC (CC BY-SA 4.0), StrategyQA, TimeDial and Social IQa (multiple choice)
and SQuADShifts and CoQA (free text); BIG-bench itself is Apache-2.0 but parts of this mix are
share-alike or non-commercial, so reflectevo does not ship them. Give the ReflectEvo file
`bigbench_test.jsonl` (ReflectEvo repository, data/data_source) with --data, or put it in
$REFLECTEVO_DATA_DIR. Multiple-choice rows carry an `id` and a gold letter a-c with the options inline
in the question; free-text rows carry no `id`. BIG-bench rows carry a canary string: keep them out of
training data (both tasks offer only a test split).
"""

from __future__ import annotations

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.choices import option_letters
from reflectevo.tasks.data_files import read_records, require, user_data_path
from reflectevo.tasks.registry import register_task
from reflectevo.verify.choice import judge_choice
from reflectevo.verify.text import judge_text

_FILE = "bigbench_test.jsonl"
_HOW = ("its rows include CC BY-SA and non-commercial sources, so reflectevo does not redistribute them; "
        "get bigbench_test.jsonl from the ReflectEvo repository, data/data_source")

# Written for reflectevo, so they can ship with the package.
_MCQ_EXAMPLES = [
    ("Passage: The bridge opened to traffic in 1932 after six years of construction.\n"
     "Claim: The bridge took less than a decade to build.\nOptions:\nA. True\nB. False\nC. Neither",
     "Construction took six years, which is less than a decade, so the claim is supported.\n"
     "The answer is: A"),
    ("Q: Can a person walk from London to New York?\nOptions:\nA. Yes\nB. No",
     "London and New York are separated by the Atlantic Ocean, which cannot be crossed on foot.\n"
     "The answer is: B"),
]
_FREE_EXAMPLES = [
    ("The library moved to Elm Street in 1998, and a children's wing was added in 2005.\n\n"
     "Question: When was the children's wing added?", "The passage says the wing was added in 2005.\n"
                                                      "The answer is: 2005"),
    ("Maria packed her lunch in a steel box because the plastic one kept cracking.\n\n"
     "Question: Why did Maria stop using the plastic box?", "It kept cracking.\nThe answer is: it kept cracking"),
]


class _OneFile(Task):
    """A task whose one (user-given) data file is one split: `data_split`, by default test."""

    def __init__(self, data_path=None, few_shot: int = 0, data_split: str | None = None):
        super().__init__(data_path, few_shot, data_split)
        self.splits = (self.data_split,)


def _rows(task: Task):
    path = user_data_path(task.name, task.data_path, _FILE, _HOW)
    return path, read_records(path)


@register_task("bigbench", "BIG-bench multiple choice, the ReflectEvo mix (356 rows); data from --data")
class BigBench(_OneFile):
    answer_type = "choice"
    instruction = "Read the question and options, reason step by step, then choose one option."
    answer_format = 'End your response with "The answer is: X" where X is the letter of one option.'

    def read(self, split: str) -> list[Problem]:
        path, rows = _rows(self)
        problems = []
        for lineno, obj in rows:
            if "id" not in obj:
                continue  # a free-text row (bigbench_free)
            question = require(obj, "question", path, lineno)
            gold = str(require(obj, "answer", path, lineno)).strip().upper()
            letters = option_letters(question, "ABC")
            if gold not in letters:
                raise InputError(f"{path}:{lineno}: answer {gold!r} is not one of the options {letters}")
            problems.append(Problem(id=f"bigbench/{split}/{obj['id']}", task=self.name, split=split,
                                    question=question, gold=gold, meta={"letters": letters}))
        return problems

    def examples(self) -> list[tuple[str, str]]:
        return _MCQ_EXAMPLES[: self.few_shot]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_choice(response, problem.gold, problem.meta.get("letters", "ABC"))


@register_task("bigbench_free", "BIG-bench free text, the ReflectEvo mix (144 rows; SQuAD EM, F1 kept); data from --data")
class BigBenchFree(_OneFile):
    answer_type = "text"
    instruction = "Read the passage and answer the question with a short phrase taken from it."
    answer_format = 'End your response with "The answer is: X" where X is a short answer.'

    def read(self, split: str) -> list[Problem]:
        path, rows = _rows(self)
        problems = []
        index = 0
        for lineno, obj in rows:
            if "id" in obj:
                continue  # a multiple-choice row (bigbench)
            answer = require(obj, "answer", path, lineno)
            aliases = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
            problems.append(Problem(id=f"bigbench_free/{split}/{index}", task=self.name, split=split,
                                    question=require(obj, "question", path, lineno), gold=aliases[0],
                                    meta={"aliases": aliases[1:], "line": lineno}))
            index += 1
        return problems

    def examples(self) -> list[tuple[str, str]]:
        return _FREE_EXAMPLES[: self.few_shot]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_text(response, problem.gold, problem.meta.get("aliases", ()))
