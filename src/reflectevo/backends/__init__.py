"""Backends: one interface (`Backend`), several engines, and the generation cache.

`load_backend("smollm2-135m")` gives the default engine for a model; `engine=` picks one by name.
"""

from __future__ import annotations

from typing import Callable

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.backends.models import DEFAULT_MODEL, ModelRef, list_models, resolve
from reflectevo.errors import BackendError, InputError


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
    """The fastest engine installed for a local model here: openvino on a machine without CUDA (measured
    against hf in benchmarks/generation.py, docs/backends.md), else hf."""
    import importlib.util

    if importlib.util.find_spec("openvino_genai") is not None:
        import torch

        if not torch.cuda.is_available():
            return "openvino"
    return "hf"


def load_backend(model: str = DEFAULT_MODEL, engine: str = "auto", **options) -> Backend:
    """`engine="auto"`: default_engine(); where that engine cannot take the model (an export it does not
    support), hf, saying so. Options left as None take the engine's own defaults."""
    _load_optional_engines()
    options = {key: value for key, value in options.items() if value is not None}
    name = default_engine(model) if engine == "auto" else engine
    if name not in ENGINES:
        raise InputError(f"unknown engine {name!r}; engines: {', '.join(sorted(ENGINES))}")
    if engine == "auto" and name != "hf":
        try:
            return ENGINES[name](model, **options)
        except BackendError as exc:
            from reflectevo.progress import console

            console.print(f"[yellow]engine {name!r} cannot run {model!r} ({exc}); using 'hf'[/yellow]")
            name = "hf"
    return ENGINES[name](model, **options)


def _load_optional_engines() -> None:
    """Engines whose modules import heavy extras only when used register on import here."""
    import importlib

    for module in ("reflectevo.backends.llamacpp", "reflectevo.backends.openai", "reflectevo.backends.vllm",
                   "reflectevo.backends.openvino"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # the module exists but its own import failed: a real bug
                raise


__all__ = ["Backend", "Completion", "DEFAULT_MODEL", "ModelRef", "SamplingParams", "list_models",
           "load_backend", "register_engine", "resolve"]
