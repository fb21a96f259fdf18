"""Tasks by name: `get_task` builds one, `list_tasks` describes them all (the shape of reflectevo.registry).

Built-ins are the modules of this package; third-party tasks come from the `reflectevo.tasks` entry-point
group. `gym:<dataset>` (any reasoning-gym dataset) and a path to a task .yaml file are tasks too.
"""

from __future__ import annotations

import inspect
from typing import Callable

from reflectevo.registry import Registry
from reflectevo.tasks.base import Task

TASKS: Registry[Callable[..., Task]] = Registry("task", "reflectevo.tasks", "reflectevo.tasks")


def register_task(name: str, description: str) -> Callable:
    """Class decorator (or call with a factory) that makes a task available by name; a Task class gets
    its `name` and `description` from here, so they are written once."""

    def wrap(factory):
        if inspect.isclass(factory) and issubclass(factory, Task):
            factory.name, factory.description = name, description
        return TASKS.register(name, description)(factory)

    return wrap


def get_task(name: str, **options) -> Task:
    """Build task `name` with `options` (data_path, data_split, few_shot, ...); None means the default."""
    options = {key: value for key, value in options.items() if value is not None}
    if name.startswith("gym:"):
        from reflectevo.tasks.gym import GymTask

        return GymTask(name[4:], **options)
    if name not in TASKS and name.endswith((".yaml", ".yml")):
        from reflectevo.tasks.yaml_task import load_yaml_task

        return load_yaml_task(name, **options)
    if name not in TASKS:
        raise TASKS.unknown(name, also="gym:<reasoning-gym dataset>, or a path to a task .yaml file")
    return TASKS.get(name).obj(**options)


def list_tasks() -> dict[str, str]:
    return TASKS.describe()
