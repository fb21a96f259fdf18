"""Shared fixtures: the test data shipped in tests/data, the embedded default model loaded once, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Small synthetic fixtures written for these tests (see tests/data/README.md); nothing outside the repo.
DATA = Path(__file__).resolve().parent / "data"

# Converted models live in REFLECTEVO_HOME; keep one for the whole session (CI sets it explicitly).
os.environ.setdefault("REFLECTEVO_HOME", str(Path.home() / ".cache" / "reflectevo"))
os.environ.setdefault("REFLECTEVO_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """tests/data: the fixtures in the reference layouts (LogiQA, BIG-bench, the paper's example files)."""
    return DATA


@pytest.fixture(scope="session")
def logiqa_path() -> Path:
    """A few LogiQA-style items in the ReflectEvo logiqa_test.jsonl layout (written for the tests)."""
    return DATA / "data_source" / "logiqa_test.jsonl"


@pytest.fixture(scope="session")
def paper_examples() -> Path:
    """The ReflectEvo paper's example layouts (raw, D+, D±, Dpref), a few synthetic records each."""
    return DATA / "paper"


@pytest.fixture(scope="session")
def default_backend():
    """The real embedded default model (SmolLM2-135M-Instruct) on the HF engine, loaded once."""
    from reflectevo.backends import load_backend

    backend = load_backend("smollm2-135m", "hf", batch_size=8)
    yield backend
    backend.close()


@pytest.fixture
def cache_path(tmp_path, monkeypatch) -> Path:
    """A fresh generation cache for this test (the user's cache is never touched)."""
    path = tmp_path / "generations.sqlite"
    monkeypatch.setenv("REFLECTEVO_CACHE", str(path))
    return path
