"""Backends: one interface (`Backend`), several engines, and the generation cache.

`load_backend("smollm2-135m")` gives the default engine for a model; `engine=` picks one by name.
"""

from __future__ import annotations

from typing import Callable

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.backends.models import DEFAULT_MODEL, ModelRef, list_models, resolve
from reflectevo.errors import BackendError
from reflectevo.progress import console
from reflectevo.registry import Registry


#: engines by name: factory(model, **options) -> Backend. `local=True`: the engine loads the model here (a
#: model reference is resolved before it loads); the others name a model a server knows. Engine modules
#: import their extra (openvino_genai, vllm, ...) only when a backend is built, so listing them is cheap.
ENGINES: Registry[Callable[..., Backend]] = Registry(
    "engine", "reflectevo.backends", "reflectevo.engines",
    modules=tuple(f"reflectevo.backends.{m}" for m in ("llamacpp", "openai", "vllm", "openvino")))


@ENGINES.register("hf", "Hugging Face transformers, batched (CPU or GPU)", local=True)
def _hf(model: str, **options) -> Backend:
    ref = resolve(model)  # a missing model fails here, before torch is imported
    from reflectevo.backends.hf import HFBackend

    return HFBackend(ref, **options)


def is_local(engine: str) -> bool:
    """Whether `engine` ("auto" included) loads models on this machine."""
    return engine == "auto" or ENGINES.get(engine).info.get("local", False)


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
    options = {key: value for key, value in options.items() if value is not None}
    name = default_engine(model) if engine == "auto" else engine
    factory = ENGINES.get(name).obj
    if engine == "auto" and name != "hf":
        resolve(model)  # a model that is not there is the user's to fix: no engine can run it
        try:
            return factory(model, **options)
        except BackendError as exc:
            console.print(f"[yellow]engine {name!r} cannot run {model!r} ({exc}); using 'hf'[/yellow]")
            factory = ENGINES.get("hf").obj
    return factory(model, **options)


__all__ = ["Backend", "Completion", "DEFAULT_MODEL", "ModelRef", "SamplingParams", "list_models",
           "load_backend", "is_local", "resolve", "ENGINES"]
