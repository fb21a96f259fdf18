"""LogiQA: logical-reasoning multiple choice (A-D). Not bundled: LogiQA states no licence.

The data comes from a path the user gives (`data_path`, the CLI's --data) or from
$REFLECTEVO_DATA_DIR. Two layouts are read:

- the ReflectEvo sample `logiqa_test.jsonl` ({id, question with inline "A." options, answer a-d}),
  the paper's 500-problem test set;
- the original LogiQA files (lgw863/LogiQA-dataset): Test.txt, Train.txt, Eval.txt, 8 lines per
  item (blank, answer letter, context, question, 4 options).

`data_path` may be one of those files (it then serves one split: `data_split`, by default the one its
name says, else test) or a folder holding them (logiqa_test.jsonl or Test.txt for test, Train.txt for
train, Eval.txt for validation).
"""

from __future__ import annotations

import os
from pathlib import Path

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.data_files import read_records, require
from reflectevo.tasks.registry import register_task
from reflectevo.verify.choice import judge_choice

_HOW = ("LogiQA states no licence, so reflectevo does not redistribute it; download logiqa_test.jsonl "
        "from the ReflectEvo repository (data/data_source) or Test.txt/Train.txt/Eval.txt from "
        "https://github.com/lgw863/LogiQA-dataset")
_FILES = {"test": ("logiqa_test.jsonl", "Test.txt"), "train": ("Train.txt",), "validation": ("Eval.txt",)}

# Written for reflectevo (not LogiQA items), so they can ship with the package.
_EXAMPLES = [
    ("Every member of the chess club also plays go. Some members of the chess club are teachers.\n"
     "Which of the following must be true?\n"
     "A.Every teacher plays go\nB.Some teachers play go\nC.No teacher plays chess\nD.Everyone who plays go "
     "is in the chess club",
     "Some chess-club members are teachers, and every chess-club member plays go, so those teachers play "
     "go. A and D overgeneralise; C contradicts the passage.\nThe answer is: B"),
    ("If it rains, the match is cancelled. The match was not cancelled.\nWhich of the following can be "
     "concluded?\nA.It rained\nB.It may have rained\nC.It did not rain\nD.The match was postponed",
     "Rain implies cancellation. The match was not cancelled, so by contraposition it did not rain.\n"
     "The answer is: C"),
]


@register_task("logiqa", "LogiQA logical reasoning MCQ (A-D), the ReflectEvo 500 sample; data from --data (no licence)")
class LogiQA(Task):
    answer_type = "choice"
    splits = ("test", "train", "validation")
    instruction = "Read the passage and question, reason step by step, then choose one option."
    answer_format = 'End your response with "The answer is: X" where X is one of A, B, C, D.'

    def __init__(self, data_path=None, few_shot: int = 0, data_split: str | None = None):
        path = Path(data_path) if data_path else None
        if data_split is None and path is not None and not path.is_dir():
            data_split = next((s for s, names in _FILES.items() if path.name in names), None)
        super().__init__(data_path, few_shot, data_split)
        if path is not None and not path.is_dir():
            self.splits = (self.data_split,)  # one file, one split

    def _path(self, split: str) -> Path:
        names = _FILES.get(split, ())
        given = self.data_path
        if given is None and os.environ.get("REFLECTEVO_DATA_DIR"):
            given = Path(os.environ["REFLECTEVO_DATA_DIR"])
            if (given / "logiqa").is_dir():
                given = given / "logiqa"
        if given is None:
            raise InputError(f"task 'logiqa' has no bundled data ({_HOW}); pass --data /path/to/"
                             f"{names[0]} or set REFLECTEVO_DATA_DIR to the folder holding it")
        if given.is_dir():
            for name in names:
                if (given / name).is_file():
                    return given / name
            raise InputError(f"task 'logiqa' split {split!r}: none of {', '.join(names)} in {given} ({_HOW})")
        if not given.is_file():
            raise InputError(f"task 'logiqa': data file {given} does not exist ({_HOW})")
        return given

    def read(self, split: str) -> list[Problem]:
        path = self._path(split)
        if path.suffix == ".txt":
            items = _read_original(path)
        else:
            items = []
            for lineno, obj in read_records(path):
                items.append((obj.get("id", lineno), require(obj, "question", path, lineno),
                              str(require(obj, "answer", path, lineno)), lineno))
        problems = []
        for item_id, question, answer, lineno in items:
            gold = answer.strip().upper()
            if gold not in ("A", "B", "C", "D"):
                raise InputError(f"{path}:{lineno}: answer {answer!r} is not one of A-D")
            problems.append(Problem(id=f"logiqa/{split}/{item_id}", task=self.name, split=split,
                                    question=question, gold=gold, meta={"letters": "ABCD"}))
        return problems

    def examples(self) -> list[tuple[str, str]]:
        return _EXAMPLES[: self.few_shot]

    def verify(self, problem: Problem, response: str) -> Verdict:
        return judge_choice(response, problem.gold, problem.meta.get("letters", "ABCD"))


def _read_original(path: Path) -> list[tuple[int, str, str, int]]:
    """Items of an original LogiQA .txt file: (index, question with options, answer letter, line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    items, i, index = [], 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        block = lines[i:i + 7]
        if len(block) < 7:
            raise InputError(f"{path}:{i + 1}: incomplete LogiQA item (expected answer, context, "
                             f"question and 4 option lines)")
        answer, context, question, *options = block
        if answer.strip().lower() not in ("a", "b", "c", "d"):
            raise InputError(f"{path}:{i + 1}: expected an answer letter a-d, got {answer.strip()!r}")
        text = f"{context.strip()}\n{question.strip()}\n" + "\n".join(o.strip() for o in options)
        items.append((index, text, answer.strip(), i + 1))
        index += 1
        i += 7
    return items
