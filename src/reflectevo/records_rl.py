"""The row contract of setting V's curated set `rl_prompts` (written by curate, read by training).

One row per failed trial 1 (x instruction): the prompt the policy answers, and the problem its reward
judges. The row carries the whole `Problem` (id, question, gold, meta), so the task's own verifier
can judge a completion without the original data (a data file, a generated pool) at training time.

Kept beside records.py, in the same style, so that it can move into it unchanged when the settings
become one registry. JSONL holds `problem` as an object; Parquet, which has no type for free-form
`meta`, holds it as a JSON string: `RLPrompt.from_row` reads both.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from reflectevo.errors import InputError
from reflectevo.records import Messages, Problem, _Record

RL_PROMPTS = "rl_prompts"  # the curated sub-folder
#: `instruction_id` of the row whose prompt is exactly the test-time one-stage prompt (no pool instruction)
TEST_TIME = "test-time"


def parquet_row(row: dict[str, Any]) -> dict[str, Any]:
    """The row as Parquet stores it: `problem` as a JSON string."""
    return {**row, "problem": json.dumps(row["problem"], ensure_ascii=False)}


class RLPrompt(_Record):
    prompt: Messages  # ends with the user turn that asks to reflect and solve again
    task: str  # registry name of the task whose verifier gives the reward
    split: str
    episode_id: str
    instruction_id: str  # TEST_TIME or the id of the pool instruction added to the prompt
    problem: Problem

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_row(cls, where: str, row: dict[str, Any]) -> "RLPrompt":
        """A validated row, or an InputError naming `where` (file:line) and the field."""
        values = {k: v for k, v in row.items() if k in cls.model_fields}  # other columns: provenance, ignored
        if isinstance(values.get("problem"), str):
            try:
                values["problem"] = json.loads(values["problem"])
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: field 'problem' is not a JSON object ({exc.msg})") from exc
        try:
            rl = cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{where}: invalid {RL_PROMPTS} row: {field}: {first['msg']}") from exc
        if rl.problem.task != rl.task:
            raise InputError(f"{where}: the row's task {rl.task!r} differs from its problem's ({rl.problem.task!r})")
        return rl
