"""User-defined tasks from a YAML file: no Python needed.

    name: capitals                     # optional; defaults to the file's stem
    description: Capital cities
    answer_type: text                  # choice | number | math | text | code
    data: capitals.jsonl               # JSONL, JSON, CSV or Parquet; relative to this file
    # or one file per split:
    # splits: {test: capitals_test.csv, train: capitals_train.csv}
    fields:                            # task field -> column in the data (defaults: same name)
      question: prompt
      answer: target
      id: uid                          # optional; default: the row number
      options: choices                 # choice tasks: a list (or "|"-separated) of option texts
      aliases: other_answers           # text tasks: more accepted answers
      tests: test_list                 # code tasks: list of assert statements
      setup: setup_code                # code tasks: optional setup code
    template: "What is the capital of {country}?"   # optional; {column} placeholders from the row
    instruction: Answer the question.  # optional; a sensible default per answer type
    answer_format: 'End your response with "The answer is: X".'   # optional, default per type
    few_shot: shots.jsonl              # optional; records with question and answer (worked answers)
    letters: ABCD                      # choice tasks without an options column

A data file given with get_task(path, data_path=..., data_split=...) (the CLI's --data, --data-split)
replaces one split (default: test). A task with one data file has one split; to generate training
data from a task, give it a train file (splits: {train: ..., test: ...}).
A template may not show the answer column: the gold answer would then be in every prompt.
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

import yaml

from reflectevo.errors import InputError
from reflectevo.records import Problem, Verdict
from reflectevo.tasks.base import Task
from reflectevo.tasks.choices import option_letters
from reflectevo.tasks.data_files import read_table
from reflectevo.verify.choice import judge_choice
from reflectevo.verify.code import function_names, judge_code
from reflectevo.verify.math import judge_math
from reflectevo.verify.number import judge_number
from reflectevo.verify.text import judge_text

ANSWER_TYPES = ("choice", "number", "math", "text", "code")
_KEYS = {"name", "description", "answer_type", "data", "splits", "default_split", "fields", "template",
         "instruction", "answer_format", "few_shot", "letters", "version"}
_FIELDS = {"question", "answer", "id", "options", "aliases", "tests", "setup"}
_DEFAULTS = {
    "choice": ("Reason step by step, then choose one option.",
               'End your response with "The answer is: X" where X is the letter of one option.'),
    "number": ("Solve the problem step by step.", 'End your response with "The answer is: N" where N is a number.'),
    "math": ("Solve the problem step by step.", "Put your final answer within \\boxed{}."),
    "text": ("Answer the question.", 'End your response with "The answer is: X" where X is a short answer.'),
    "code": ("You are an expert Python programmer. Write a Python function for the task.",
             "Give the complete function in one ```python code block."),
}
_LETTERS = "ABCDEFGHIJ"


class YamlTask(Task):
    """A task described by a YAML file (see the module docstring)."""

    def __init__(self, spec_path: str | Path, data_path: str | Path | None = None, few_shot: int = 0,
                 data_split: str | None = None):
        super().__init__(data_path=data_path, few_shot=few_shot, data_split=data_split)
        self.spec_path = Path(spec_path)
        spec = _read_spec(self.spec_path)
        where = str(self.spec_path)
        self.name = str(spec.get("name") or self.spec_path.stem)
        self.description = str(spec.get("description", f"user task from {self.spec_path.name}"))
        self.answer_type = spec.get("answer_type", "")
        if self.answer_type not in ANSWER_TYPES:
            raise InputError(f"{where}: answer_type must be one of {', '.join(ANSWER_TYPES)}, "
                             f"got {self.answer_type!r}")
        base = self.spec_path.parent
        files: dict[str, Path] = {}
        if "splits" in spec:
            if not isinstance(spec["splits"], dict) or not spec["splits"]:
                raise InputError(f"{where}: splits must map split names to data files")
            files = {str(k): base / str(v) for k, v in spec["splits"].items()}
        elif "data" in spec:
            files = {"test": base / str(spec["data"])}
        elif data_path is None:
            raise InputError(f"{where}: give the data file as data: <path> (or splits: {{test: <path>}})")
        if data_path is not None:
            files = {**files, self.data_split: Path(data_path)}
        self.files = files
        self.splits = tuple(files)
        self.default_split = str(spec.get("default_split", "test" if "test" in files else self.splits[0]))
        if self.default_split not in files:
            raise InputError(f"{where}: default_split {self.default_split!r} is not one of the splits")
        fields = spec.get("fields") or {}
        if not isinstance(fields, dict) or set(fields) - _FIELDS:
            raise InputError(f"{where}: fields maps {', '.join(sorted(_FIELDS))} to data columns; "
                             f"unknown: {', '.join(sorted(set(fields) - _FIELDS)) if isinstance(fields, dict) else fields}")
        self.fields = {key: str(fields.get(key, key)) for key in _FIELDS}
        self.template = spec.get("template")
        if self.template is not None:
            try:
                shown = {name for _, name, _, _ in string.Formatter().parse(str(self.template)) if name}
            except ValueError as exc:
                raise InputError(f"{where}: bad template ({exc})") from exc
            leaked = shown & {self.fields["answer"], self.fields["aliases"]}
            if leaked:
                raise InputError(f"{where}: template shows the answer column {{{sorted(leaked)[0]}}}: the gold answer "
                                 f"would be in every prompt (and in every training row built from it)")
        instruction, answer_format = _DEFAULTS[self.answer_type]
        self.instruction = str(spec.get("instruction", instruction))
        self.answer_format = str(spec.get("answer_format", answer_format))
        self.version = str(spec.get("version", "1"))
        self.letters = str(spec.get("letters", "ABCD")).upper()
        self.few_shot_path = base / str(spec["few_shot"]) if spec.get("few_shot") else None
        for split, path in files.items():
            if not path.is_file():
                raise InputError(f"{where}: data file for split {split!r} does not exist: {path}")

    # -- loading ---------------------------------------------------------------------------------

    def _get(self, row: dict, key: str, path: Path, number: int, required: bool = True) -> Any:
        column = self.fields[key]
        if column not in row or row[column] is None or row[column] == "":
            if required:
                raise InputError(f"{path}:{number}: missing field {column!r} (task field {key!r}; "
                                 f"map it under fields: in {self.spec_path.name})")
            return None
        return row[column]

    def _question(self, row: dict, path: Path, number: int) -> str:
        if self.template:
            try:
                return str(self.template).format_map(_Row(row))
            except KeyError as exc:
                raise InputError(f"{path}:{number}: template placeholder {exc} is not a column of the data "
                                 f"({self.spec_path.name})") from exc
            except (ValueError, IndexError) as exc:
                raise InputError(f"{self.spec_path}: bad template ({exc})") from exc
        return str(self._get(row, "question", path, number))

    def read(self, split: str) -> list[Problem]:
        path = self.files[split]
        problems = []
        for number, row in read_table(path):
            problems.append(self._problem(row, split, path, number))
        return problems

    def _problem(self, row: dict, split: str, path: Path, number: int) -> Problem:
        question = self._question(row, path, number)
        meta: dict[str, Any] = {}
        ident = self._get(row, "id", path, number, required=False)
        ident = number if ident is None else ident
        if self.answer_type == "code":
            tests = _as_list(self._get(row, "tests", path, number))
            if not tests:
                raise InputError(f"{path}:{number}: no tests for a code task")
            setup = self._get(row, "setup", path, number, required=False) or ""
            gold = str(self._get(row, "answer", path, number, required=False) or "")
            meta.update(tests=tests, setup=str(setup), entry_point=(function_names(tests) or [None])[0])
            question = (f"{question}\nYour code should pass these tests:\n" + "\n".join(tests)
                        + (f"\nThe tests run after this setup code:\n{setup}" if str(setup).strip() else ""))
        else:
            gold = _scalar(self._get(row, "answer", path, number))
        if self.answer_type == "choice":
            options = self._get(row, "options", path, number, required=False)
            if options is not None:
                options = _as_list(options, separator="|")
                letters = _LETTERS[: len(options)]
                question += "\n" + "\n".join(f"{l}. {o}" for l, o in zip(letters, options))
            else:
                letters = option_letters(question, self.letters)
            gold = _gold_letter(gold, letters, options, path, number)
            meta["letters"] = letters
        elif self.answer_type == "text":
            aliases = self._get(row, "aliases", path, number, required=False)
            meta["aliases"] = [str(a) for a in _as_list(aliases, separator="|")] if aliases is not None else []
        return Problem(id=f"{self.name}/{split}/{ident}", task=self.name, split=split, question=question,
                       gold=gold, meta=meta)

    def examples(self) -> list[tuple[str, str]]:
        if not self.few_shot or self.few_shot_path is None:
            return []
        shots = []
        for number, row in read_table(self.few_shot_path):
            question = row.get("question")
            answer = row.get("answer")
            if question is None or answer is None:
                raise InputError(f"{self.few_shot_path}:{number}: a few-shot record needs 'question' and "
                                 f"'answer' (a worked answer ending in the answer format)")
            shots.append((str(question), str(answer)))
        return shots[: self.few_shot]

    def verify(self, problem: Problem, response: str) -> Verdict:
        kind = self.answer_type
        if kind == "choice":
            return judge_choice(response, problem.gold, problem.meta.get("letters", self.letters))
        if kind == "number":
            return judge_number(response, problem.gold)
        if kind == "math":
            return judge_math(response, problem.gold)
        if kind == "text":
            return judge_text(response, problem.gold, problem.meta.get("aliases", ()))
        return judge_code(response, problem.meta["tests"], problem.meta.get("setup", ""))

    def describe(self) -> dict:
        return {**super().describe(), "spec": str(self.spec_path)}


class _Row(dict):
    def __missing__(self, key):
        raise KeyError(key)


def _scalar(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _as_list(value: Any, separator: str | None = None) -> list[str]:
    if value is None:
        return []
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            import json

            parsed = json.loads(text)
            if isinstance(parsed, list):
                return [str(v) for v in parsed]
        except ValueError:
            pass
    if separator and separator in text:
        return [part.strip() for part in text.split(separator)]
    return [line for line in text.splitlines() if line.strip()] if "\n" in text else [text]


def _gold_letter(gold: str, letters: str, options: list[str] | None, path: Path, number: int) -> str:
    """A choice gold given as a letter ("b", "(B)"), a 0-based index, or the option's text."""
    text = gold.strip()
    match = re.fullmatch(r"\(?([A-Za-z])\)?\.?", text)
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    if options is not None:
        if text.isdigit() and int(text) < len(options):
            return letters[int(text)]
        for letter, option in zip(letters, options):
            if option.strip().lower() == text.lower():
                return letter
    raise InputError(f"{path}:{number}: answer {gold!r} is not an option letter ({letters})"
                     + (", an option index or an option's text" if options is not None else ""))


def _read_spec(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path}: task file does not exist")
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())  # one line, even for a ReaderError
        raise InputError(f"{path}{line}: malformed YAML ({reason})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(spec, dict):
        raise InputError(f"{path}: expected a mapping of task settings")
    unknown = set(spec) - _KEYS
    if unknown:
        raise InputError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(_KEYS))}")
    return spec


def load_yaml_task(path: str | Path, data_path: str | Path | None = None, few_shot: int = 0,
                   data_split: str | None = None) -> YamlTask:
    return YamlTask(path, data_path=data_path, few_shot=few_shot, data_split=data_split)
