"""Tasks: loaders, prompt formats and verifiers, registered by name."""

from reflectevo.tasks.base import Task
from reflectevo.tasks.registry import get_task, list_tasks, register_task

__all__ = ["Task", "get_task", "list_tasks", "register_task"]
