"""Curated training data: find each setting's dataset, validate every row, hand TRL only its columns.

Everything here runs before a model loads, so a wrong folder, an empty file, a D+- file given to SFT or
a missing column fails in a second with the file and line, not after minutes of model loading.
The curated layout (written by `reflectevo curate`): CURATED/<dataset>/{train,validation}.{jsonl,parquet}.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from reflectevo.errors import InputError
from reflectevo.records import RL_PROMPTS, TEST_SPLIT, RLPrompt, read_jsonl
from reflectevo.tasks import get_task
from reflectevo.training.config import SETTINGS

#: the columns TRL reads, per trainer kind; provenance columns (episode_id, ...) are dropped. GRPO's reward
#: reads `problem` (JSON-encoded, see records.RLPrompt) and `task` too.
COLUMNS = {"sft": ("prompt", "completion"), "dpo": ("prompt", "chosen", "rejected"), "grpo": ("prompt", "problem")}
KIND_NAMES = {"sft": "prompt/completion rows (SFT, settings I-II)",
              "dpo": "prompt/chosen/rejected pairs (DPO, settings III-IV)",
              "grpo": "prompt/problem rows (RL, setting V)"}


def _kind_of(row: dict) -> str | None:
    """Which kind of dataset a row belongs to, by its columns (None: none of them)."""
    for kind in ("dpo", "sft", "grpo"):  # DPO first: its rows have no completion, SFT's no chosen
        if all(c in row for c in COLUMNS[kind]):
            return kind
    return None
ROLES = {"system", "user", "assistant"}


@dataclass
class StageData:
    """One dataset a stage trains on, validated, with TRL columns only."""

    name: str  # curated sub-folder name, e.g. "sft_one_stage"
    folder: Path
    kind: str  # "sft" | "dpo" | "grpo"
    train: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    tasks: Counter = field(default_factory=Counter)
    files: dict[str, str] = field(default_factory=dict)  # file -> sha256, for the model card
    judges: dict[str, Any] = field(default_factory=dict)  # GRPO: row task name -> the Task whose verifier rewards


def _rows(folder: Path, split: str) -> tuple[Path, Iterator[tuple[str, dict[str, Any]]]] | None:
    """(file, iterator of (location, row)) for a split, JSONL preferred over its Parquet twin."""
    jsonl, parquet = folder / f"{split}.jsonl", folder / f"{split}.parquet"
    if jsonl.is_file():
        return jsonl, ((f"{jsonl}:{n}", row) for n, row in read_jsonl(jsonl))
    if parquet.is_file():
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(parquet)
        except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
            raise InputError(f"{parquet}: cannot read Parquet ({exc})") from exc
        return parquet, ((f"{parquet}: row {i + 1}", row) for i, row in enumerate(table.to_pylist()))
    return None


def _check_messages(where: str, column: str, value: Any, assistant_reply: bool) -> None:
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: column {column!r} must be a non-empty list of chat messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or message.get("role") not in ROLES \
                or not isinstance(message.get("content"), str):
            raise InputError(f"{where}: {column}[{i}] must be {{'role': system|user|assistant, 'content': str}}")
    if assistant_reply:
        if len(value) != 1 or value[0]["role"] != "assistant" or not value[0]["content"].strip():
            raise InputError(f"{where}: column {column!r} must be one non-empty assistant message")
    elif value[-1]["role"] != "user":
        raise InputError(f"{where}: the prompt must end with a user message (it ends with "
                         f"{value[-1]['role']!r})")


def validate_row(where: str, row: dict, kind: str, setting: str, allow_test_split: bool = False) -> dict:
    """The row's TRL columns, or an InputError that says what is wrong and where."""
    if row.get("split") == TEST_SPLIT and not allow_test_split:
        raise InputError(f"{where}: a row from the {TEST_SPLIT!r} split (episode {row.get('episode_id')}); training "
                         f"on test problems contaminates every evaluation on them. Curate episodes of a train "
                         f"split, or pass --allow-test-split if you know why")
    needed = COLUMNS[kind]
    other = _kind_of(row)
    if other not in (None, kind) and not all(c in row for c in needed):
        raise InputError(f"{where}: this is a dataset of {KIND_NAMES[other]}, but setting {setting} trains on "
                         f"{KIND_NAMES[kind]}; give the curated folder that holds "
                         f"{', '.join(s.dataset for s in SETTINGS.get(setting).obj.stages)}/")
    missing = [c for c in needed if c not in row]
    if missing:
        raise InputError(f"{where}: missing column {missing[0]!r} (setting {setting} needs {', '.join(needed)})")
    if kind == "grpo":
        return _rl_row(where, row)
    for column in needed:
        _check_messages(where, column, row[column], assistant_reply=column != "prompt")
    return {c: [{"role": m["role"], "content": m["content"]} for m in row[c]] for c in needed}


def _rl_row(where: str, row: dict) -> dict:
    """TRL's columns of a setting V row: the prompt, the JSON-encoded problem the reward rebuilds, its task."""
    _check_messages(where, "prompt", row["prompt"], assistant_reply=False)
    rl = RLPrompt.from_row(where, row)
    return {"prompt": [{"role": m["role"], "content": m["content"]} for m in rl.prompt],
            "problem": rl.problem.model_dump_json(), "task": rl.task}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _judge(where: str, name: str, reward_task: str | None, judges: dict[str, Any]) -> None:
    """Record in `judges` the task that rewards rows of task `name`; a row naming an unknown task fails at
    its line. With `reward_task` every row name maps to that one task (built once)."""

    if name in judges:
        return
    if reward_task and judges:
        judges[name] = next(iter(judges.values()))
        return
    try:
        judges[name] = get_task(reward_task or name)
    except InputError as exc:
        hint = "" if reward_task else " (for a task defined in a .yaml file, set reward_task: PATH.yaml)"
        raise InputError(f"{where}: {exc}{hint}") from exc


def load_stage(folder: Path, kind: str, setting: str, allow_test_split: bool = False,
               reward_task: str | None = None) -> StageData:
    data = StageData(name=folder.name, folder=folder, kind=kind)
    for split in ("train", "validation"):
        found = _rows(folder, split)
        if found is None:
            if split == "train":
                raise InputError(f"{folder}: no train.jsonl or train.parquet (expected a curated dataset folder)")
            continue
        path, rows = found
        target = data.train if split == "train" else data.validation
        for where, row in rows:
            target.append(validate_row(where, row, kind, setting, allow_test_split))
            if kind == "grpo":
                _judge(where, target[-1]["task"], reward_task, data.judges)
            if split == "train":
                data.tasks[str(row.get("task", "unknown"))] += 1
        data.files[str(path)] = _sha256(path)
    if not data.train:
        raise InputError(f"{next(iter(data.files))}: no rows; setting {setting} needs at least one training row")
    return data


def is_dataset_folder(folder: Path) -> bool:
    return (folder / "train.jsonl").is_file() or (folder / "train.parquet").is_file()


def load_setting(data_dir: str | Path, setting: str, allow_test_split: bool = False,
                 reward_task: str | None = None) -> list[tuple[str, StageData]]:
    """(stage name, data) for each model the setting trains, in training order.

    `data_dir` is the curated folder; a single-model setting also accepts the dataset sub-folder itself.
    `reward_task` (setting V): the task that judges every row instead of each row's own.
    """
    root = Path(data_dir).expanduser()
    if root.is_file():
        raise InputError(f"{root} is a file; train expects a curated folder (from `reflectevo curate`) holding "
                         f"{', '.join(s.dataset + '/' for s in SETTINGS.get(setting).obj.stages)} with train.jsonl (or train.parquet), "
                         f"or one such dataset folder")
    if not root.is_dir():
        raise InputError(f"curated folder {root} does not exist (make one with `reflectevo curate`)")
    stages = SETTINGS.get(setting).obj.stages
    if is_dataset_folder(root):
        if len(stages) > 1:
            raise InputError(f"{root} is one dataset, but setting {setting} trains two models: give the curated "
                             f"folder that holds {' and '.join(s.dataset + '/' for s in stages)}")
        return [(stages[0].name, load_stage(root, stages[0].trainer, setting, allow_test_split, reward_task))]
    loaded = []
    for stage in stages:
        folder = root / stage.dataset
        if not folder.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir() and is_dataset_folder(p))
            how = "; `reflectevo curate RUN_DIR` writes it from the run's failed trial 1s" \
                if stage.dataset == RL_PROMPTS else ""
            raise InputError(f"{root} has no {stage.dataset}/ (setting {setting} trains on it); "
                             f"datasets found: {', '.join(present) or 'none'}{how}")
        loaded.append((stage.name, load_stage(folder, stage.trainer, setting, allow_test_split, reward_task)))
    return loaded
