"""Tasks are registered by name; `get_task` builds one, `list_tasks` describes them all."""

from __future__ import annotations

from typing import Callable

from reflectevo.errors import InputError
from reflectevo.tasks.base import Task

_REGISTRY: dict[str, Callable[..., Task]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_task(name: str, description: str = "") -> Callable:
    """Class decorator (or call with a factory) that makes a task available by name."""

    def wrap(factory: Callable[..., Task]):
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or getattr(factory, "description", "")
        return factory

    return wrap


def get_task(name: str, **options) -> Task:
    """Build task `name` with `options` (data_path, data_split, few_shot, ...); None means the default."""
    _load_builtin()
    options = {key: value for key, value in options.items() if value is not None}
    if name.startswith("gym:"):
        from reflectevo.tasks.gym import GymTask

        return GymTask(name[4:], **options)
    if name not in _REGISTRY:
        if name.endswith((".yaml", ".yml")):
            from reflectevo.tasks.yaml_task import load_yaml_task

            return load_yaml_task(name, **options)
        known = ", ".join(sorted(_REGISTRY))
        raise InputError(f"unknown task {name!r}; known tasks: {known}, gym:<reasoning-gym dataset>, "
                         f"or a path to a task .yaml file")
    return _REGISTRY[name](**options)


def list_tasks() -> dict[str, str]:
    _load_builtin()
    return dict(sorted(_DESCRIPTIONS.items()))


def _load_builtin() -> None:
    # Importing the modules runs their @register_task decorators.
    import reflectevo.tasks.builtin  # noqa: F401
    from reflectevo.tasks import gym

    _REGISTRY.setdefault("arith", gym.arith)
    _DESCRIPTIONS.setdefault("arith", "sums of 2-3 small numbers from reasoning-gym chain_sum; exact scorer; "
                                      "the quickstart's task")
    _REGISTRY.setdefault("add", gym.add)
    _DESCRIPTIONS.setdefault("add", "sums of two numbers below 100, number-only answers (reasoning-gym); exact "
                                    "scorer; the evidence task")
