"""Curation stage (docs/curation.md): episodes -> the training sets of the four reflection-learning settings.

From each failed trial 1 and its reflections (each with its trial 2) it builds, in chat-message form
that TRL consumes as is:

    sft_one_stage    D+, setting I:   (q, failed trial 1, feedback) -> reflection + corrected answer
    sft_reflect      D+, setting II1: (q, failed trial 1, feedback) -> reflection
    sft_correct      D+, setting II2: the stored correction prompt   -> corrected answer
    dpo_contrastive  D±, setting III: chosen led to a correct trial 2, rejected to an incorrect one
    dpo_preference   Dpref, IV:       both led to a correct trial 2, ordered by a judge (stages/judge.py)
    sft_self_train   the control:     (q) -> the model's own right trial-1 answer, no reflection, as many
                                      rows as sft_one_stage, so a gain can be told apart from reflection's
    rl_prompts       setting V (RL):  one row per failed trial 1 (x instruction): setting I's prompt and
                                      the problem its reward judges (records.RLPrompt); no reflection
                                      needs to have corrected anything, the policy's own rollouts are judged

Reflections are filtered first (empty, length limits, exact/near duplicates within the problem, and,
where the gold answer may have reached a prompt, stating it), pairs and rows are capped per problem, and
every dataset is split into train and validation by problem, never by sample. Each dataset is written as
JSONL and Parquet. Episodes of a test split are refused: test problems only report. See docs/curation.md.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from reflectevo.backends.models import hf_folder, resolve
from reflectevo.config import StageConfig
from reflectevo.errors import InputError, ReflectEvoError
from reflectevo.formats.paper import detect_layout, import_episodes, read_json_objects
from reflectevo.progress import console, progress_bar
from reflectevo.prompts import reflect_and_correct_prompt, test_reflection_prompt
from reflectevo.prompts.templates import instruction_of
from reflectevo.records import (CURATED_SCHEMA, DATASETS, EPISODE_SCHEMA, RL_PROMPTS, SFT_SETS, TEST_SPLIT, TEST_TIME,
                                Episode, PairRow, Reflection, RLPrompt, SFTRow, parquet_row, read_episodes)
from reflectevo.registry import Registry
from reflectevo.runs import RunDir, write_atomic, write_json
from reflectevo.stages.judge import JudgeOptions, order_preferences
from reflectevo.tasks import get_task

DEFAULT_FILTERS = ("no_trial2", "too_short", "too_long", "states_answer", "duplicate", "near_duplicate")


class CurateConfig(StageConfig, JudgeOptions):
    """Settings of `reflectevo curate` (defaults in parentheses are the CLI's)."""

    source: str = Field(description="run directory, episodes .jsonl, or a paper-layout file")
    out: str | None = Field(None, description="curated directory (default: RUN_DIR/curated)")
    datasets: list[str] = Field(default_factory=lambda: list(DATASETS), description="training sets to build")
    filters: list[str] = Field(default_factory=lambda: list(DEFAULT_FILTERS),
                               description="reflection filters in order (`reflectevo filters` lists them)")
    dedup: Literal["none", "exact", "near"] = Field("near", description="reflection dedup within a problem")
    near_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of word 3-shingles")
    max_per_problem: int | None = Field(None, ge=1, description="rows (SFT, RL) / pairs (DPO) per problem and set")
    validation: float = Field(0.1, ge=0, lt=1, description="share of problems held out for validation")
    min_chars: int = Field(1, ge=0, description="drop reflections shorter than this")
    max_chars: int | None = Field(None, ge=1, description="drop reflections longer than this")
    max_tokens: int | None = Field(None, ge=1, description="reflection length limit in tokens of `tokenizer`")
    tokenizer: str | None = Field(None, description="model preset or folder whose tokenizer counts tokens")
    drop_answer_leaks: bool | None = Field(
        None, description="drop reflections that state the gold answer (default: only for imported paper "
                          "files, whose stored prompts may show the answer; the gold answer never reaches our "
                          "reflector, so a reflection that re-derives it is a genuine self-correction)")
    allow_test_split: bool = Field(False, description="curate episodes of a test split (they contaminate "
                                                      "every later evaluation on it)")
    task: str | None = Field(None, description="task name for paper-layout sources")


# --------------------------------------------------------------------------------------------- input

def resolve_source(source: str | Path) -> tuple[Path, Path]:
    """(episodes file, default curated dir) for a run directory or an episodes file."""
    path = Path(source)
    if path.is_dir():
        episodes = path / "episodes.jsonl"
        if not episodes.is_file():
            raise InputError(f"{path}: no episodes.jsonl in this directory (run `reflectevo generate` first)")
        return episodes, path / "curated"
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    # A run's episodes.jsonl curates into the run; any other file into a folder named after it.
    return path, path.parent / ("curated" if path.name == "episodes.jsonl" else f"{path.stem}_curated")


def load_source(path: Path, task: str | None = None) -> tuple[list[Episode], bool]:
    """(episodes, imported): ours from episodes JSONL, or imported from any of the paper's layouts."""

    line, first = next(iter(read_json_objects(path)), (0, None))  # parses the first object only
    if first is None:
        raise InputError(f"{path}: empty file, no episodes to curate")
    if first.get("schema") == EPISODE_SCHEMA:
        return read_episodes(path), False
    if detect_layout(first) is None:
        raise InputError(f"{path}:{line}: neither a reflectevo episode (schema {EPISODE_SCHEMA!r}) nor a "
                         f"ReflectEvo paper record (fields: {', '.join(sorted(first)[:8])})")
    return import_episodes(path, task=task), True


def refuse_test_split(episodes: list[Episode], source: Path, allowed: bool) -> None:
    """Test problems only report: training on them would inflate every later score on that split."""
    test = [ep for ep in episodes if ep.split == TEST_SPLIT]
    if test and not allowed:
        raise InputError(f"{source}: {len(test)} of {len(episodes)} episodes are from the {TEST_SPLIT!r} split "
                         f"(e.g. {test[0].id}), and training on test problems contaminates every evaluation "
                         f"on them; generate on train (`reflectevo generate` does by default), or pass "
                         f"--allow-test-split if you know why")


# ------------------------------------------------------------------------------ per-task information

class TaskInfo:
    """What curation needs from a task: its answer format and a gold-answer leak check.

    Tasks are built without loading data (only class attributes and `verify` are used), so tasks that
    need a user data path (e.g. logiqa) still work. Imported episodes name their answer format in
    meta["answer_format"]; an unknown task falls back to the answer format at the end of the stored
    trial-2 prompt, and to a plain text leak check.
    """

    def __init__(self):
        self._tasks: dict[str, Any] = {}

    def task(self, name: str):
        if name not in self._tasks:
            try:
                self._tasks[name] = get_task(name)
            except ReflectEvoError:
                self._tasks[name] = None
        return self._tasks[name]

    def answer_format(self, ep: Episode) -> str:
        if isinstance(ep.meta.get("answer_format"), str):  # imported records say which format they follow
            return ep.meta["answer_format"]
        task = self.task(ep.task)
        if task is not None:
            return task.answer_format
        for r in ep.reflections:
            if r.trial2 and r.trial2.messages:
                text = r.trial2.messages[-1].get("content", "")
                marker = "solve the problem again from the start. "
                if marker in text:
                    return text.split(marker, 1)[1].strip()
        raise InputError(f"episode {ep.id}: task {ep.task!r} is unknown and no stored trial-2 prompt ends "
                         f"with an answer format; register the task (see `reflectevo tasks`)")

    def states_answer(self, ep: Episode, text: str) -> bool:
        return states_gold_answer(self.task(ep.task), ep, text)


_CUE = r"(?:answer|result)\s*(?:is|should be|must be|would be|=|:)\s*[:\s]*(?:\*\*|\(|\[|\$)*\s*"
# A computed value anywhere in the text: "4 + 10 = 14", "which is 14", "equals 14". Only for number and
# math answers, where stating the value mid-reflection gives the answer away as surely as ending on it.
_VALUE_CUE = r"(?:=|\bis|\bequals?|\bgives?|\bmakes?)\s*(?:\*\*|\$)?\s*"


def _norm_words(text: str) -> list[str]:
    return re.sub(r"[^0-9a-z]+", " ", text.lower()).split()


def states_gold_answer(task, ep: Episode, text: str) -> bool:
    """Whether a reflection states the gold answer (a reflection should name the mistake, not give the
    answer: docs/curation.md).

    - choice / number / math: the task's own extractor, applied to the reflection as if it were an
      answer, finds the gold answer (so "the answer is B" or a closing "...= 72" counts), or an answer
      cue ("answer is", "should be", ...) is followed by the gold answer anywhere in the text;
    - number / math also: the gold value follows "=", "is", "equals", ... anywhere ("4 + 10, which is
      14, ..."), since the task's extractor reads only the last number;
    - code: never (reflections discuss code; running them as a solution makes no sense);
    - text and unknown tasks: the normalised gold answer occurs as a whole-word phrase after an answer
      cue, or anywhere if it is at least two words long.
    """
    gold = ep.gold.strip()
    if not gold or not text.strip():
        return False
    kind = getattr(task, "answer_type", "") if task is not None else ""
    if kind == "code":
        return False
    cue = re.search(_CUE + re.escape(gold) + r"(?![0-9a-z])", text, flags=re.IGNORECASE)
    if cue:
        return True
    if kind in ("number", "math") and re.search(_VALUE_CUE + re.escape(gold) + r"(?![0-9a-z]|[.,][0-9])", text,
                                                flags=re.IGNORECASE):
        return True
    if kind in ("choice", "number", "math"):
        try:
            return bool(task.verify(ep.problem(), text).correct)
        except Exception:  # a verifier that cannot read free text is no reason to stop curation
            return False
    words, gold_words = _norm_words(text), _norm_words(gold)
    if len(gold_words) < 2:
        return False
    n = len(gold_words)
    return any(words[i:i + n] == gold_words for i in range(len(words) - n + 1))


# ---------------------------------------------------------------------------------------- filtering

def normalise(text: str) -> str:
    return " ".join(_norm_words(text))


def shingles(text: str, size: int = 3) -> set[tuple[str, ...]]:
    words = _norm_words(text)
    if len(words) < size:
        return {tuple(words)}
    return {tuple(words[i:i + size]) for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


@dataclass
class Filtered:
    """The reflections of one failed episode that survived the filters, why others did not, and how many
    kept ones state the gold answer (what the optional answer-stating filter would drop)."""

    episode: Episode
    kept: list[Reflection]
    dropped: Counter = field(default_factory=Counter)
    stating: list[Reflection] = field(default_factory=list)

    @property
    def positives(self) -> list[Reflection]:
        return [r for r in self.kept if r.trial2.verdict.correct]

    @property
    def negatives(self) -> list[Reflection]:
        return [r for r in self.kept if not r.trial2.verdict.correct]


@dataclass
class FilterContext:
    """What a filter sees of the episode under curation; `seen_*` hold the reflections kept so far."""

    episode: Episode
    cfg: CurateConfig
    info: TaskInfo
    count_tokens: Callable[[str], int] | None = None
    drop_stating: bool = False
    seen_exact: set[str] = field(default_factory=set)
    seen_shingles: list[set] = field(default_factory=list)


#: reflection filters by name: filter(reflection, stripped text, context) -> True to drop it. A filter's
#: name is the reason counted in curation.json's `reflections_dropped`; `CurateConfig.filters` orders them (the first
#: that drops a reflection names the reason). Plugins add filters through the `reflectevo.filters` group.
FILTERS: Registry[Callable[[Reflection, str, FilterContext], bool]] = Registry(
    "curation filter", "reflectevo.stages", "reflectevo.filters", modules=())


@FILTERS.register("no_trial2", "the reflection has no trial 2 (nothing tells whether it helped)")
def no_trial2(r: Reflection, text: str, ctx: FilterContext) -> bool:
    return r.trial2 is None


@FILTERS.register("too_short", "shorter than min_chars (at least 1: an empty reflection)")
def too_short(r: Reflection, text: str, ctx: FilterContext) -> bool:
    return len(text) < max(ctx.cfg.min_chars, 1)


@FILTERS.register("too_long", "longer than max_chars, or than max_tokens of `tokenizer`")
def too_long(r: Reflection, text: str, ctx: FilterContext) -> bool:
    if ctx.cfg.max_chars and len(text) > ctx.cfg.max_chars:
        return True
    return bool(ctx.cfg.max_tokens and ctx.count_tokens and ctx.count_tokens(text) > ctx.cfg.max_tokens)


@FILTERS.register("cut_off", "reached max_tokens, so it ends mid-thought (opt-in: docs/curation.md)")
def cut_off(r: Reflection, text: str, ctx: FilterContext) -> bool:
    # A cut reflection teaches thoughts that never end. Off by default: for Qwen2.5-Coder-1.5B on GSM8K
    # train, cut and finished reflections led to a right trial 2 alike (22/438 vs 18/386), and dropping
    # the cut ones would halve the little there is to learn from (docs/evidence.md).
    return r.finish_reason == "length"


@FILTERS.register("states_answer", "states the gold answer (when drop_answer_leaks is on)")
def states_answer(r: Reflection, text: str, ctx: FilterContext) -> bool:
    return ctx.drop_stating and ctx.info.states_answer(ctx.episode, text)


@FILTERS.register("duplicate", "the same words as a reflection kept for this problem (dedup exact or near)")
def duplicate(r: Reflection, text: str, ctx: FilterContext) -> bool:
    return ctx.cfg.dedup != "none" and normalise(text) in ctx.seen_exact


@FILTERS.register("near_duplicate", "word 3-shingle Jaccard >= near_threshold with a kept one (dedup near)")
def near_duplicate(r: Reflection, text: str, ctx: FilterContext) -> bool:
    if ctx.cfg.dedup != "near" or not ctx.seen_shingles:
        return False
    mine = shingles(text)  # once, not once per kept reflection
    return any(jaccard(mine, s) >= ctx.cfg.near_threshold for s in ctx.seen_shingles)


def filter_reflections(ep: Episode, cfg: CurateConfig, info: TaskInfo,
                       count_tokens: Callable[[str], int] | None = None, drop_stating: bool = False) -> Filtered:
    result = Filtered(ep, [])
    ctx = FilterContext(ep, cfg, info, count_tokens, drop_stating)
    filters = [(name, FILTERS.get(name).obj) for name in cfg.filters]
    # Positives first, so a duplicate of a reflection that corrected the answer never replaces it.
    ordered = sorted(ep.reflections, key=lambda r: (not (r.trial2 and r.trial2.verdict.correct), r.index))
    for r in ordered:
        text = r.text.strip()
        reason = next((name for name, drops in filters if drops(r, text, ctx)), None)
        if reason:
            result.dropped[reason] += 1
            continue
        ctx.seen_exact.add(normalise(text))
        ctx.seen_shingles.append(shingles(text))
        result.kept.append(r)
        if not drop_stating and info.states_answer(ep, text):
            result.stating.append(r)
    result.kept.sort(key=lambda r: r.index)
    return result


def token_counter(tokenizer: str | None) -> Callable[[str], int] | None:
    if not tokenizer:
        return None
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(hf_folder(resolve(tokenizer))))
    except ReflectEvoError:
        raise
    except Exception as exc:  # any loader failure is a bad setting, said in one line
        raise InputError(f"setting 'tokenizer': cannot load a tokenizer from {tokenizer!r} ({exc})") from exc
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"])


# ------------------------------------------------------------------------------------------- rows

def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _cap(items: list, cap: int | None, seed: int, key: str) -> list:
    """At most `cap` items, chosen reproducibly from (seed, key); order is kept."""
    if cap is None or len(items) <= cap:
        return items
    rng = random.Random(hashlib.sha256(f"{seed}:{key}".encode()).digest())
    chosen = sorted(rng.sample(range(len(items)), cap))
    return [items[i] for i in chosen]


def sft_rows(f: Filtered, answer_format: str, cfg: CurateConfig) -> dict[str, list[dict]]:
    ep, t1 = f.episode, f.episode.trial1
    feedback = t1.verdict.feedback
    rows: dict[str, list[dict]] = {name: [] for name in SFT_SETS}
    for r in _cap(f.positives, cfg.max_per_problem, cfg.seed, f"sft:{ep.id}"):
        ids = {"task": ep.task, "split": ep.split, "episode_id": ep.id, "reflection_index": r.index,
               "instruction_id": r.instruction_id}
        rows["sft_one_stage"].append(SFTRow(
            prompt=reflect_and_correct_prompt(t1.messages, t1.response, feedback, answer_format),
            completion=_assistant(r.text.strip() + "\n\n" + r.trial2.response), **ids).to_row())
        rows["sft_reflect"].append(SFTRow(
            prompt=test_reflection_prompt(t1.messages, t1.response, feedback),
            completion=_assistant(r.text), **ids).to_row())
        rows["sft_correct"].append(SFTRow(
            prompt=r.trial2.messages, completion=_assistant(r.trial2.response), **ids).to_row())
    return rows


def pair_row(ep: Episode, chosen: Reflection, rejected: Reflection, **extra) -> dict:
    t1 = ep.trial1
    return PairRow(prompt=test_reflection_prompt(t1.messages, t1.response, t1.verdict.feedback),
                   chosen=_assistant(chosen.text), rejected=_assistant(rejected.text),
                   task=ep.task, split=ep.split, episode_id=ep.id,
                   chosen_reflection_index=chosen.index, rejected_reflection_index=rejected.index,
                   chosen_instruction_id=chosen.instruction_id, rejected_instruction_id=rejected.instruction_id,
                   **extra).to_row()


def contrastive_rows(f: Filtered, cfg: CurateConfig) -> list[dict]:
    pairs = [(c, r) for c in f.positives for r in f.negatives]
    return [pair_row(f.episode, c, r) for c, r in _cap(pairs, cfg.max_per_problem, cfg.seed,
                                                        f"contrastive:{f.episode.id}")]


def preference_candidates(f: Filtered, cfg: CurateConfig) -> list[tuple[Episode, Reflection, Reflection]]:
    """Unordered pairs of reflections that both led to a correct trial 2 (capped before judging)."""
    pos = f.positives
    pairs = [(f.episode, pos[i], pos[j]) for i in range(len(pos)) for j in range(i + 1, len(pos))]
    ranked = f.episode.meta.get("preferences")
    if ranked:  # imported from a paper Dpref file: only the pairs the paper ranked
        ranked_sets = [set(pair) for pair in ranked]
        pairs = [p for p in pairs if {p[1].index, p[2].index} in ranked_sets]
    return _cap(pairs, cfg.max_per_problem, cfg.seed, f"preference:{f.episode.id}")


def rl_prompt_rows(ep: Episode, answer_format: str, cfg: CurateConfig) -> list[dict]:
    """Setting V's prompts for one failed trial 1: the test-time one-stage prompt (exactly what
    `evaluate --mode one-stage` sends), then the same prompt with each pool instruction this episode's
    reflections were generated with (read back from their stored prompts, first use first). The cap
    keeps the test-time row and draws the rest reproducibly."""
    t1 = ep.trial1
    instructions: dict[str, str] = {}
    for r in ep.reflections:
        text = instruction_of(r.messages)
        if text and r.instruction_id not in instructions and r.instruction_id != TEST_TIME:
            instructions[r.instruction_id] = text
    variants = [(TEST_TIME, None), *instructions.items()]
    cap = None if cfg.max_per_problem is None else cfg.max_per_problem - 1
    variants = variants[:1] + _cap(variants[1:], cap, cfg.seed, f"rl:{ep.id}")
    return [RLPrompt(prompt=reflect_and_correct_prompt(t1.messages, t1.response, t1.verdict.feedback, answer_format,
                                                       instruction=text),
                     task=ep.task, split=ep.split, episode_id=ep.id, instruction_id=iid,
                     problem=ep.problem()).to_row()
            for iid, text in variants]


def self_train_rows(episodes: list[Episode], sizes: dict[str, int], seed: int) -> dict[str, list[dict]]:
    """The self-training control: right trial-1 answers as (trial-1 prompt -> answer) rows, `sizes` rows
    per split (as many as the reflection set it controls for), whole problems chosen by sha256(seed, id)."""
    right = sorted((ep for ep in episodes if ep.trial1.verdict.correct),
                   key=lambda ep: hashlib.sha256(f"{seed}:{ep.id}".encode()).hexdigest())
    rows = [SFTRow(prompt=ep.trial1.messages, completion=_assistant(ep.trial1.response), task=ep.task,
                   split=ep.split, episode_id=ep.id, reflection_index=None, instruction_id=None).to_row()
            for ep in right]
    n_train = min(sizes["train"], len(rows))
    return {"train": rows[:n_train], "validation": rows[n_train:n_train + sizes["validation"]]}


# ------------------------------------------------------------------------------------------ split

def split_by_problem(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, validation): whole problems go to one side, chosen by sha256(seed, episode id).

    Problems are ordered by their hash and the first round(fraction * n) go to validation, at least
    one when there are two or more problems and fraction > 0, so small sets still get a validation set.
    """
    problems = sorted({row["episode_id"] for row in rows},
                      key=lambda pid: hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest())
    n_val = 0
    if fraction > 0 and len(problems) >= 2:
        n_val = min(len(problems) - 1, max(1, round(fraction * len(problems))))
    held_out = set(problems[:n_val])
    return ([r for r in rows if r["episode_id"] not in held_out],
            [r for r in rows if r["episode_id"] in held_out])


# ------------------------------------------------------------------------------------------ write

def _schema(name: str):
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    ids = [("task", pa.string()), ("split", pa.string()), ("episode_id", pa.string())]
    if name == RL_PROMPTS:  # `problem` as a JSON string: Parquet has no type for free-form meta
        return pa.schema([("prompt", messages), *ids, ("instruction_id", pa.string()), ("problem", pa.string())])
    if name in SFT_SETS:
        return pa.schema([("prompt", messages), ("completion", messages), *ids,
                          ("reflection_index", pa.int64()), ("instruction_id", pa.string())])
    fields = [("prompt", messages), ("chosen", messages), ("rejected", messages), *ids,
              ("chosen_reflection_index", pa.int64()), ("rejected_reflection_index", pa.int64()),
              ("chosen_instruction_id", pa.string()), ("rejected_instruction_id", pa.string())]
    if name == "dpo_preference":
        fields.append(("judge", pa.string()))
    return pa.schema(fields)


def write_dataset(folder: Path, name: str, splits: dict[str, list[dict]]) -> None:
    """train/validation as JSONL and Parquet (explicit schema, so empty splits still have columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(name)
    for split, rows in splits.items():
        write_atomic(folder / f"{split}.jsonl",
                     "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        if name == RL_PROMPTS:
            rows = [parquet_row(row) for row in rows]
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
        write_atomic(folder / f"{split}.parquet", buffer.getvalue())


# ----------------------------------------------------------------------------------------- stage

def curate_episodes(episodes: list[Episode], cfg: CurateConfig, judge=None,
                    imported: bool = False) -> tuple[dict[str, dict[str, list[dict]]], dict]:
    """Build every requested dataset's train/validation rows, and the counts that describe them.

    `judge`: an open Generator to order Dpref pairs with (default: load `cfg.judge` if set).
    `imported`: the episodes come from a paper file (the answer-stating filter is then on by default).
    """
    unknown = [n for n in cfg.datasets if n not in DATASETS]
    if unknown:
        raise InputError(f"setting 'datasets': unknown dataset(s) {', '.join(unknown)}; "
                         f"known: {', '.join(DATASETS)}")
    for name in cfg.filters:
        if name not in FILTERS:
            raise InputError(f"setting 'filters': {FILTERS.unknown(name)}")
    info = TaskInfo()
    count_tokens = token_counter(cfg.tokenizer) if cfg.max_tokens else None
    if cfg.max_tokens and not cfg.tokenizer:
        raise InputError("setting 'max_tokens' needs 'tokenizer' (a model preset or folder), "
                         "or use 'max_chars'")
    drop_stating = cfg.drop_answer_leaks if cfg.drop_answer_leaks is not None else imported
    failed = [ep for ep in episodes if not ep.trial1.verdict.correct and ep.reflections]
    filtered = []
    with progress_bar("curate: filter reflections", len(failed), "episodes") as advance:
        for ep in failed:
            filtered.append(filter_reflections(ep, cfg, info, count_tokens, drop_stating))
            advance(1)
    rows: dict[str, list[dict]] = {name: [] for name in DATASETS}
    for f in filtered:
        if any(n in SFT_SETS for n in cfg.datasets) and f.positives:
            for name, new in sft_rows(f, info.answer_format(f.episode), cfg).items():
                rows[name].extend(new)
        if "dpo_contrastive" in cfg.datasets:
            rows["dpo_contrastive"].extend(contrastive_rows(f, cfg))
    if RL_PROMPTS in cfg.datasets:  # every failed trial 1, reflected on or not: the policy's rollouts are judged
        for ep in episodes:
            if not ep.trial1.verdict.correct:
                rows[RL_PROMPTS].extend(rl_prompt_rows(ep, info.answer_format(ep), cfg))
    judge_summary = {}
    if "dpo_preference" in cfg.datasets:
        candidates = [c for f in filtered for c in preference_candidates(f, cfg)]
        ordered, judge_summary = order_preferences(candidates, cfg, judge)
        rows["dpo_preference"] = [pair_row(ep, chosen, rejected, judge=json.dumps(verdict, ensure_ascii=False))
                                  for ep, chosen, rejected, verdict in ordered]
    splits = {name: dict(zip(("train", "validation"), split_by_problem(rows[name], cfg.validation, cfg.seed)))
              for name in DATASETS if name != "sft_self_train"}
    splits["sft_self_train"] = self_train_rows(
        episodes, {s: len(part) for s, part in splits["sft_one_stage"].items()}, cfg.seed)
    result = {name: splits[name] for name in cfg.datasets}
    dropped = sum((f.dropped for f in filtered), Counter())
    counts = {
        "episodes": len(episodes),
        "failed": sum(not ep.trial1.verdict.correct for ep in episodes),
        "failed_with_reflections": len(failed),
        "reflections": sum(len(ep.reflections) for ep in failed),
        "reflections_kept": sum(len(f.kept) for f in filtered),
        "reflections_kept_correct": sum(len(f.positives) for f in filtered),
        "reflections_dropped": dict(sorted(dropped.items())),
        # What the answer-stating filter drops (when on) or would drop (when off): kept reflections that
        # state the gold answer, and the corrected ones among them (each one a D+ row).
        "answer_stating": {"filter": "on" if drop_stating else "off",
                           "reflections": dropped["states_answer"] if drop_stating else sum(len(f.stating) for f in filtered),
                           "corrected": sum(r.trial2.verdict.correct for f in filtered for r in f.stating)
                           if not drop_stating else None},
        # Kept reflections cut by max_tokens, and the corrected ones among them (what `cut_off` would drop).
        "cut_off": {"reflections": sum(r.finish_reason == "length" for f in filtered for r in f.kept),
                    "corrected": sum(r.finish_reason == "length" for f in filtered for r in f.positives)},
        "datasets": {name: _describe(splits) for name, splits in result.items()},
        "judge": judge_summary,
    }
    return result, counts


def _describe(splits: dict[str, list[dict]]) -> dict:
    rows = [r for part in splits.values() for r in part]
    instructions = Counter()
    for r in rows:
        for key in ("instruction_id", "chosen_instruction_id"):
            if key in r:
                instructions[r[key]] += 1
    return {"train": len(splits["train"]), "validation": len(splits["validation"]),
            "problems": {"train": len({r["episode_id"] for r in splits["train"]}),
                         "validation": len({r["episode_id"] for r in splits["validation"]})},
            "per_task": dict(sorted(Counter(r["task"] for r in rows).items())),
            "per_instruction": dict(sorted(instructions.items()))}


def curate(cfg: CurateConfig) -> Path:
    """Read episodes (or a paper file), write CURATED_DIR/<dataset>/{train,validation}.{jsonl,parquet}."""
    source, default_out = resolve_source(cfg.source)
    out = Path(cfg.out) if cfg.out else default_out
    episodes, imported = load_source(source, cfg.task)  # bad input fails here, before a judge loads
    if not episodes:
        raise InputError(f"{source}: no episodes to curate")
    refuse_test_split(episodes, source, cfg.allow_test_split)
    result, counts = curate_episodes(episodes, cfg, imported=imported)
    if not any(len(r) for splits in result.values() for r in splits.values()):
        raise InputError(f"{source}: curation produced no rows ({counts['episodes']} episodes, "
                         f"{counts['failed_with_reflections']} failed trial 1 with reflections, "
                         f"{counts['reflections_kept']} reflections kept, "
                         f"{counts['reflections_kept_correct']} of them corrected the answer; "
                         f"dropped: {counts['reflections_dropped'] or 'none'})")
    with RunDir(out) as run:
        for name, splits in result.items():
            write_dataset(out / name, name, splits)
        summary = {"schema": CURATED_SCHEMA, "source": str(source), "config": cfg.model_dump(), **counts}
        write_json(out / "curation.json", summary)
        run.write_manifest("curate", cfg.model_dump(), source=str(source), outputs=list(result))
        run.log(f"curate: {json.dumps(counts['datasets'])}")
    table = ", ".join(f"{n} {d['train']}+{d['validation']}" for n, d in counts["datasets"].items())
    console.print(f"[green]wrote[/green] {out}: {table} (train+validation rows)")
    empty = [n for n, d in counts["datasets"].items() if d["train"] + d["validation"] == 0]
    if empty:
        console.print(f"[yellow]note[/yellow]: no rows for {', '.join(empty)}")
    return out
