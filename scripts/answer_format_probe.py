"""How much does the answer format alone change the untrained model's accuracy?

    python scripts/answer_format_probe.py --task add --limit 200

Greedy trial 1 on the test split, told to think step by step (the generated tasks' default prompt),
then with only the question and "Reply with only the number." (numeric tasks). Quoted in docs/evidence.md.
"""

from __future__ import annotations

import argparse
import copy

from reflectevo.backends import load_backend
from reflectevo.backends.base import SamplingParams
from reflectevo.tasks import get_task
from reflectevo.tasks.gym import NUMERIC_ANSWER_FORMAT, GymTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="add")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    task = get_task(args.task)
    problems = task.load("test")[: args.limit]
    backend = load_backend(args.model)
    # The same task and prompt builder; only the instruction and the answer format differ.
    step_by_step, number_only = copy.copy(task), copy.copy(task)
    step_by_step.instruction, step_by_step.answer_format = GymTask.instruction, NUMERIC_ANSWER_FORMAT
    number_only.instruction, number_only.answer_format = "", "Reply with only the number."
    formats = {"step by step": step_by_step.prompt, "number only": number_only.prompt}
    for name, prompt in formats.items():
        outputs = backend.generate([prompt(p) for p in problems], SamplingParams(max_tokens=args.max_tokens))
        right = sum(task.verify(p, o[0].text).correct for p, o in zip(problems, outputs))
        print(f"{name}: {right}/{len(problems)} right")


if __name__ == "__main__":
    main()
