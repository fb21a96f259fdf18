"""Shared fixtures: the reference data folder, the embedded default model loaded once, isolated caches."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Converted models live in REFLECTEVO_HOME; keep one for the whole session (CI sets it explicitly).
os.environ.setdefault("REFLECTEVO_HOME", str(Path.home() / ".cache" / "reflectevo"))
os.environ.setdefault("REFLECTEVO_NO_PROGRESS", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def logiqa_path(shared_data) -> Path:
    return shared_data / "reflectevo" / "data_source" / "logiqa_test.jsonl"


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
