"""Prompt templates and the reflection instruction pool."""

from reflectevo.prompts.instructions import Instruction, draw, load_pool, select
from reflectevo.prompts.templates import (correction_prompt, reflect_and_correct_prompt, reflection_prompt,
                                         retry_prompt, self_check_prompt, test_reflection_prompt)

__all__ = ["Instruction", "correction_prompt", "draw", "load_pool", "reflect_and_correct_prompt",
           "reflection_prompt", "retry_prompt", "select", "self_check_prompt", "test_reflection_prompt"]
