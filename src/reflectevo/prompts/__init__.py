"""Prompt templates and the reflection instruction pool."""

from reflectevo.prompts.instructions import Instruction, draw, load_pool, select
from reflectevo.prompts.templates import (correction_prompt, reflect_and_correct_prompt, reflection_prompt,
                                         test_reflection_prompt)

__all__ = ["Instruction", "correction_prompt", "draw", "load_pool", "reflect_and_correct_prompt",
           "reflection_prompt", "select", "test_reflection_prompt"]
