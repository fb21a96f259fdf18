"""Content-addressed generation cache in SQLite, and the batching generator that uses it.

A completion is stored under sha256(engine + model fingerprint, messages, sampling parameters, seed, sample
index). Each batch is committed in one transaction right after it is generated, so a run killed at any
moment loses at most the batch in flight, and a rerun regenerates nothing that finished.

Only what is missing is generated: every sample is its own request, seeded by `sample_seed(run seed,
prompt, sample index)`, and the engine receives exactly the (prompt, sample) pairs absent from the
cache. `--limit 200` after `--limit 100` generates the 100 new prompts; `--samples 4` after
`--samples 2` generates samples 2 and 3 of each prompt. Greedy samples are one request (their text is
the same). Since a sample's text depends on its own (prompt, seed) only where the engine is batch
invariant (`Backend.batch_invariant`; the HF engine is, by construction), a resumed run there equals an
uninterrupted one byte for byte; docs/backends.md says which engines promise it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.backends.models import home
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
    return Path(os.environ.get("REFLECTEVO_CACHE") or home() / "generations.sqlite")


#: how a sample's randomness is chosen; part of every key, so completions made under another scheme
#: (before per-sample seeds, every sample of a batch shared one random stream) are never reused
SEEDING = "per-sample/1"


def cache_key(fingerprint: str, messages: Messages, params: SamplingParams, sample_index: int) -> str:
    payload = json.dumps({"model": fingerprint, "messages": messages, "sampling": params.key(),
                          "sample": sample_index, "seeding": SEEDING}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def sample_seed(seed: int, messages: Messages, sample_index: int) -> int:
    """The engine seed of one sample: from the run's seed, the prompt and the sample's index, so it never
    depends on what else is generated with it (31 bits: every engine takes it)."""
    payload = json.dumps({"seed": seed, "messages": messages, "sample": sample_index}, sort_keys=True,
                         ensure_ascii=False)
    return int(hashlib.sha256(payload.encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


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

    def items(self) -> Iterator[tuple[str, Completion, str]]:
        """Every stored (key, completion, model), oldest first: what a copy of the cache elsewhere needs."""
        for key, text, tokens, reason, model in self.db.execute(
                "SELECT key, text, tokens, finish_reason, model FROM completions ORDER BY created, key"):
            yield key, Completion(text=text, tokens=tokens, finish_reason=reason), model

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
        """n completions per prompt. `on_progress(count, cached=bool)` counts prompts as all their samples
        are served (see progress.py)."""
        fp = self.backend.cache_identity
        keyed = [[cache_key(fp, m, params, i) for i in range(params.n)] for m in prompts]
        results = self.cache.get_many([k for keys in keyed for k in keys]) if self.cache is not None else {}
        # The missing samples, one request each (greedy: one per prompt, whose text serves every sample).
        requests: dict[str, tuple[Messages, SamplingParams, set[str]]] = {}
        owners: dict[str, list[int]] = {}  # key -> the prompts waiting for it
        missing = [0] * len(prompts)
        for index, (messages, keys) in enumerate(zip(prompts, keyed)):
            for i, key in enumerate(keys):
                if key in results:
                    continue
                if params.temperature == 0 and keys[0] in results:  # greedy: sample 0's text is every sample's
                    results[key] = results[keys[0]]
                    continue
                missing[index] += 1
                owners.setdefault(key, []).append(index)
                if params.temperature == 0:
                    requests.setdefault(keys[0], (messages, replace(params, n=1), set()))[2].add(key)
                else:
                    seed = sample_seed(params.seed, messages, i)
                    requests.setdefault(key, (messages, replace(params, n=1, seed=seed), set()))[2].add(key)
        if on_progress and missing.count(0):
            on_progress(missing.count(0), cached=True)
        # Shortest prompts first, in fixed-size batches; the order changes no text (batch invariance).
        order = sorted(requests.items(), key=lambda item: (_length(item[1][0]), item[0]))
        size = max(1, self.backend.batch_size)
        for start in range(0, len(order), size):
            batch = [request for _, request in order[start:start + size]]
            outputs = self.backend.generate([m for m, _, _ in batch], [p for _, p, _ in batch])
            fresh = [(key, outs[0]) for (_, _, keys), outs in zip(batch, outputs) for key in sorted(keys)]
            self.generated_tokens += sum(outs[0].tokens for outs in outputs)
            if self.cache is not None:
                self.cache.put_many(fresh, self.backend.model_id)
                fresh = list(self.cache.get_many([k for k, _ in fresh]).items())  # what every process uses
            results.update(fresh)
            finished = 0
            for key, _ in fresh:
                for index in owners.pop(key, ()):
                    missing[index] -= 1
                    finished += missing[index] == 0
            if on_progress and finished:
                on_progress(finished)
        return [[results[k] for k in keys] for keys in keyed]


def _length(messages: Messages) -> int:
    return sum(len(m.get("content", "")) for m in messages)
