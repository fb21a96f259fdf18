"""Backends: one interface (`Backend`), several engines, and the generation cache.

`load_backend("smollm2-135m")` gives the default engine for a model; `engine=` picks one by name.
"""

from __future__ import annotations

from typing import Callable

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.backends.models import DEFAULT_MODEL, ModelRef, list_models, resolve
from reflectevo.errors import InputError


def _hf(model: str, **options) -> Backend:
    ref = resolve(model)  # a missing model fails here, before torch is imported
    from reflectevo.backends.hf import HFBackend

    return HFBackend(ref, **options)


#: engine name -> factory(model, **options). Other engines register themselves here.
ENGINES: dict[str, Callable[..., Backend]] = {"hf": _hf}
ENGINE_DESCRIPTIONS: dict[str, str] = {"hf": "Hugging Face transformers, batched (CPU or GPU)"}


def register_engine(name: str, description: str):
    def wrap(factory):
        ENGINES[name] = factory
        ENGINE_DESCRIPTIONS[name] = description
        return factory

    return wrap


def default_engine(model: str) -> str:
    # hf stays the default: llama.cpp measured 6x faster on a contended 2-core machine, HF batched is
    # ahead on an idle one (RUNTIME.md); see docs/backends.md before changing this.
    return "hf"


def load_backend(model: str = DEFAULT_MODEL, engine: str = "auto", **options) -> Backend:
    _load_optional_engines()
    name = default_engine(model) if engine == "auto" else engine
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; engines: {', '.join(sorted(ENGINES))}")
    return ENGINES[name](model, **options)


def _load_optional_engines() -> None:
    """Engines whose modules import heavy extras only when used register on import here."""
    import importlib

    for module in ("reflectevo.backends.llamacpp", "reflectevo.backends.openai", "reflectevo.backends.vllm"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but its own import failed: a real bug
                raise


__all__ = ["Backend", "Completion", "DEFAULT_MODEL", "ModelRef", "SamplingParams", "list_models",
           "load_backend", "register_engine", "resolve"]
