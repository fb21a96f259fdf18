"""Built-in tasks. Importing this module registers them (one module per task family)."""

from __future__ import annotations

from reflectevo.tasks.bigbench import BigBench, BigBenchFree
from reflectevo.tasks.gsm8k import GSM8K
from reflectevo.tasks.logiqa import LogiQA
from reflectevo.tasks.math import Math500Task, MathTask
from reflectevo.tasks.mbpp import MBPP

__all__ = ["GSM8K", "LogiQA", "MathTask", "Math500Task", "MBPP", "BigBench", "BigBenchFree"]
