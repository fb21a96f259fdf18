"""Content-addressed generation cache in SQLite, and the batching generator that uses it.

A completion is stored under sha256(engine + model fingerprint, messages, sampling parameters, seed, sample
index). Each batch is committed in one transaction right after it is generated, so a run killed at any
moment loses at most the batch in flight, and a rerun regenerates nothing that finished.

Determinism across resumes: prompts are deduplicated, ordered by length and cut into fixed batches
*before* the cache is consulted, and a batch with anything missing is regenerated whole with the same
seed. A resumed run therefore sends the engine exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.errors import ReflectEvoError
from reflectevo.records import Messages

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    from reflectevo.backends.models import home

    return Path(os.environ.get("REFLECTEVO_CACHE") or home() / "generations.sqlite")


def cache_key(fingerprint: str, messages: Messages, params: SamplingParams, sample_index: int) -> str:
    payload = json.dumps({"model": fingerprint, "messages": messages, "sampling": params.key(),
                          "sample": sample_index}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class GenerationCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we open transactions ourselves, one per batch.
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise ReflectEvoError(f"generation cache {self.path}: {exc}") from exc

    def get_many(self, keys: Sequence[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            rows = self.db.execute(
                f"SELECT key, text, tokens, finish_reason FROM completions WHERE key IN ({','.join('?' * len(chunk))})",
                chunk).fetchall()
            for key, text, tokens, reason in rows:
                found[key] = Completion(text=text, tokens=tokens, finish_reason=reason, meta={"cached": True})
        return found

    def put_many(self, items: Sequence[tuple[str, Completion]], model: str) -> None:
        """Insert in one transaction; a key already present (another process won) is kept as is."""
        now = time.time()
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT OR IGNORE INTO completions VALUES (?, ?, ?, ?, ?, ?)",
                [(key, c.text, c.tokens, c.finish_reason, model, now) for key, c in items])
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise ReflectEvoError(f"generation cache {self.path}: cannot write ({exc})") from exc

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        self.db.close()


class Generator:
    """A backend behind the cache: the one way stages ask for completions."""

    def __init__(self, backend: Backend, cache: GenerationCache | None):
        self.backend = backend
        self.cache = cache
        self.generated_tokens = 0  # tokens produced by the engine in this process (not from the cache)

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def generate(self, prompts: Sequence[Messages], params: SamplingParams,
                 on_progress: Callable[..., None] | None = None) -> list[list[Completion]]:
        """n completions per prompt. `on_progress(count, cached=bool)` follows each batch (see progress.py)."""
        fp = self.backend.cache_identity
        keyed = [[cache_key(fp, m, params, i) for i in range(params.n)] for m in prompts]
        unique: dict[str, int] = {}  # first key of a prompt -> index of its first occurrence
        copies: Counter[str] = Counter()
        for index, keys in enumerate(keyed):
            unique.setdefault(keys[0], index)
            copies[keys[0]] += 1
        order = sorted(unique.values(), key=lambda i: (_length(prompts[i]), keyed[i][0]))
        results: dict[str, Completion] = {}
        size = max(1, self.backend.batch_size)
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            wanted = [k for i in batch for k in keyed[i]]
            found = self.cache.get_many(wanted) if self.cache is not None else {}
            cached = len(found) == len(wanted)
            if not cached:
                outputs = self.backend.generate([prompts[i] for i in batch], params)
                fresh = [(k, c) for i, outs in zip(batch, outputs) for k, c in zip(keyed[i], outs)]
                self.generated_tokens += sum(c.tokens for _, c in fresh)
                if self.cache is not None:
                    self.cache.put_many(fresh, self.backend.model_id)
                    found = self.cache.get_many(wanted)  # what is stored is what every process uses
                else:
                    found = dict(fresh)
            results.update(found)
            if on_progress:
                on_progress(sum(copies[keyed[i][0]] for i in batch), cached=cached)
        return [[results[k] for k in keys] for keys in keyed]


def _length(messages: Messages) -> int:
    return sum(len(m.get("content", "")) for m in messages)
