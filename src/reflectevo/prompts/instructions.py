"""The reflection instruction pool (docs/curation.md): 2 ways to examine x 8 error kinds x 2 plan styles.

The pool is data (prompts/data/instructions.jsonl). Users extend or replace it with their own JSONL
file of {"id", "text"} objects; ids are stable, and every reflection record keeps the id it came from.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from reflectevo.errors import InputError
from reflectevo.records import read_jsonl

DEFAULT_POOL = Path(str(resources.files("reflectevo") / "prompts" / "data" / "instructions.jsonl"))


@dataclass(frozen=True)
class Instruction:
    id: str
    text: str


def load_pool(*paths: str | Path) -> dict[str, Instruction]:
    """The built-in pool plus any user files (a user id replaces a built-in id of the same name)."""
    pool: dict[str, Instruction] = {}
    for path in (DEFAULT_POOL, *paths):
        for lineno, obj in read_jsonl(path):
            if not isinstance(obj.get("id"), str) or not isinstance(obj.get("text"), str):
                raise InputError(f"{path}:{lineno}: an instruction needs string fields 'id' and 'text'")
            pool[obj["id"]] = Instruction(obj["id"], obj["text"])
    return pool


def select(pool: dict[str, Instruction], ids: list[str] | None) -> list[Instruction]:
    """The instructions named by `ids` (None or ["all"] -> the whole pool), unknown ids rejected."""
    if not ids or ids == ["all"]:
        return list(pool.values())
    unknown = [i for i in ids if i not in pool]
    if unknown:
        raise InputError(f"unknown instruction id(s) {', '.join(unknown)}; see `reflectevo instructions`")
    return [pool[i] for i in ids]


def draw(candidates: list[Instruction], k: int, problem_id: str, seed: int) -> list[Instruction]:
    """k instructions for one problem, chosen reproducibly from (problem id, seed)."""
    if k <= 0 or k >= len(candidates):
        return list(candidates)
    digest = hashlib.sha256(f"{seed}:{problem_id}".encode()).digest()
    return random.Random(digest).sample(candidates, k)
