"""Typed records that cross a stage, each with its schema version: the contracts of the pipeline.

    generate -> Episode (Problem, trial 1, reflections[trial 2])        episodes.jsonl   reflectevo.episode/1
    curate   -> SFTRow, PairRow, RLPrompt (one per trainer)            curated sets     reflectevo.curated/1
    evaluate -> EvalSample per problem, results.json                   samples.jsonl    reflectevo.eval-sample/2

Curation, training, evaluation and reports read only these. Every `messages` field holds exactly what
the backend received (before the chat template), captured before generation, so any record can be
replayed and any training row rebuilt from it.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reflectevo.errors import InputError

EPISODE_SCHEMA = "reflectevo.episode/1"
#: The split whose problems only report: curation and training refuse its episodes and rows.
TEST_SPLIT = "test"
SAMPLE_SCHEMA = "reflectevo.eval-sample/2"
SAMPLE_SCHEMAS = ("reflectevo.eval-sample/1", SAMPLE_SCHEMA)  # /1: written before the retry baseline
RESULTS_SCHEMA = "reflectevo.eval-results/2"
RESULTS_SCHEMAS = ("reflectevo.eval-results/1", RESULTS_SCHEMA)

Messages = list[dict[str, str]]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Problem(_Record):
    """One task item. `meta` carries task-specific extras (e.g. MBPP test code, answer options)."""

    id: str
    task: str
    split: str
    question: str
    gold: str
    meta: dict[str, Any] = Field(default_factory=dict)


class Verdict(_Record):
    correct: bool
    extracted: str | None = None
    feedback: str = "incorrect"
    extraction_failed: bool = False
    # The response hit max_tokens; its cut-off last line was not judged (verify/truncation.py).
    truncated: bool = False
    details: dict[str, Any] = Field(default_factory=dict)


class Sampling(_Record):
    """The sampling parameters a record was produced with (the seed is stored beside it)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: list[str] = Field(default_factory=list)


class Attempt(_Record):
    """A trial (1 or 2): the prompt sent, the response, who produced it and how it was judged."""

    messages: Messages
    response: str
    model: str
    sampling: Sampling
    seed: int
    sample_index: int = 0
    finish_reason: str = "stop"  # stop | length (cut off by max_tokens)
    verdict: Verdict


class Reflection(_Record):
    index: int
    instruction_id: str
    messages: Messages
    text: str
    model: str
    sampling: Sampling
    seed: int
    sample_index: int = 0
    finish_reason: str = "stop"
    trial2: Attempt | None = None


class Episode(_Record):
    schema_version: str = Field(EPISODE_SCHEMA, alias="schema")
    id: str
    task: str
    split: str
    question: str
    gold: str
    meta: dict[str, Any] = Field(default_factory=dict)
    trial1: Attempt
    reflections: list[Reflection] = Field(default_factory=list)

    @classmethod
    def start(cls, problem: Problem, trial1: Attempt) -> "Episode":
        return cls(id=problem.id, task=problem.task, split=problem.split, question=problem.question,
                   gold=problem.gold, meta=problem.meta, trial1=trial1)

    def problem(self) -> Problem:
        return Problem(id=self.id, task=self.task, split=self.split, question=self.question,
                       gold=self.gold, meta=self.meta)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, mode="json"), ensure_ascii=False, sort_keys=False)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line raises InputError naming it."""
    path = Path(path)
    try:
        # Bytes, decoded line by line, so that bad bytes are reported with their line; .gz transparently.
        handle = io.BytesIO(gzip.decompress(path.read_bytes())) if path.suffix == ".gz" else path.open("rb")
    except (OSError, EOFError, zlib.error) as exc:  # EOFError, zlib.error: a cut-short or damaged .gz
        raise InputError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from exc
    with handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from exc
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from exc
            if not isinstance(obj, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_episodes(path: str | Path) -> list[Episode]:
    path = Path(path)
    episodes = []
    for lineno, obj in read_jsonl(path):
        if obj.get("schema") != EPISODE_SCHEMA:
            raise InputError(f"{path}:{lineno}: not a reflectevo episode (schema={obj.get('schema')!r}, "
                             f"expected {EPISODE_SCHEMA!r})")
        try:
            episodes.append(Episode.model_validate(obj))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise InputError(f"{path}:{lineno}: invalid episode: {where}: {first['msg']}") from exc
    return episodes


def episode_counts(episodes: Sequence[Episode]) -> dict[str, int]:
    """What a set of episodes holds: the counts generate's summary, the report and `stats` show."""
    failed = [ep for ep in episodes if not ep.trial1.verdict.correct]
    reflections = [r for ep in failed for r in ep.reflections]
    return {
        "problems": len(episodes),
        "trial1_correct": len(episodes) - len(failed),
        "trial1_extraction_failed": sum(ep.trial1.verdict.extraction_failed and not ep.trial1.verdict.truncated
                                        for ep in episodes),
        "trial1_truncated": sum(ep.trial1.verdict.truncated for ep in episodes),
        "trial2_truncated": sum(bool(r.trial2 and r.trial2.verdict.truncated) for r in reflections),
        "failures": len(failed),
        "reflections": len(reflections),
        "trial2_correct": sum(bool(r.trial2 and r.trial2.verdict.correct) for r in reflections),
        "failures_corrected": sum(any(r.trial2 and r.trial2.verdict.correct for r in ep.reflections)
                                  for ep in failed),
    }


def episodes_to_jsonl(episodes: Iterable[Episode]) -> str:
    return "".join(ep.to_json() + "\n" for ep in episodes)


class SelfCheck(_Record):
    """The model's own judgement of its trial 1 (oracle-free protocol)."""

    messages: Messages
    response: str
    model: str
    sampling: Sampling
    seed: int
    decision: Literal["keep", "revise"]
    parsed: bool  # False: no verdict could be read, and the answer was revised


class EvalSample(_Record):
    """One evaluated problem: an episode (trial 1, and the oracle-gated reflection with its trial 2 when
    trial 1 was wrong), the retry without reflection beside that trial 2 (the baseline the reflection is
    measured against), the self-check, and the oracle-free reflection with its trial 2 when the
    self-check said revise. Reflections use instruction_id "test-time" (no pool instruction)."""

    schema_version: str = Field(SAMPLE_SCHEMA, alias="schema")
    episode: Episode
    retry: Attempt | None = None
    self_check: SelfCheck | None = None
    oracle_free: Reflection | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def read_samples(path: str | Path) -> list[EvalSample]:
    samples = []
    for lineno, obj in read_jsonl(path):
        if obj.get("schema") not in SAMPLE_SCHEMAS:
            raise InputError(f"{path}:{lineno}: not a reflectevo evaluation sample (schema={obj.get('schema')!r})")
        try:
            samples.append(EvalSample.model_validate(obj))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"{path}:{lineno}: invalid sample: {'.'.join(map(str, first['loc']))}: "
                             f"{first['msg']}") from exc
    return samples


# ------------------------------------------------------------------------------ curated rows (curate -> train)
# One row contract per trainer; curation writes rows through these records, training reads their columns.
# Provenance columns (task, split, episode_id, which reflection and instruction) travel with every row.

CURATED_SCHEMA = "reflectevo.curated/1"  # stamped in curation.json
SFT_SETS = ("sft_one_stage", "sft_reflect", "sft_correct", "sft_self_train")
DPO_SETS = ("dpo_contrastive", "dpo_preference")
RL_PROMPTS = "rl_prompts"
DATASETS = SFT_SETS + DPO_SETS + (RL_PROMPTS,)


class SFTRow(_Record):
    prompt: Messages
    completion: Messages  # one assistant turn
    task: str
    split: str
    episode_id: str
    reflection_index: int | None  # None: the self-training control (no reflection)
    instruction_id: str | None

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class PairRow(_Record):
    prompt: Messages
    chosen: Messages
    rejected: Messages
    task: str
    split: str
    episode_id: str
    chosen_reflection_index: int
    rejected_reflection_index: int
    chosen_instruction_id: str
    rejected_instruction_id: str
    judge: str | None = None  # dpo_preference: the verdict that ordered the pair (JSON)

    def to_row(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"judge"} if self.judge is None else set())


#: setting V's rows (rl_prompts): one per failed trial 1 (x instruction), the prompt the policy answers and
#: the whole problem its reward judges, so the task's verifier needs no data file at training time. JSONL
#: holds `problem` as an object; Parquet, which has no type for free-form `meta`, as a JSON string.
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
