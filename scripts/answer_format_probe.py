"""How much does the answer format alone change the untrained model's accuracy?

    python scripts/answer_format_probe.py --task add --limit 200

Greedy trial 1 on the test split with the task's own prompt, then with the question followed by
"Reply with only the number." (numeric tasks). Quoted in docs/evidence.md.
"""

from __future__ import annotations

import argparse

from reflectevo.backends import load_backend
from reflectevo.backends.base import SamplingParams
from reflectevo.tasks import get_task

STEP_BY_STEP = "Solve the problem. Think step by step."
STEP_BY_STEP_FORMAT = 'End your response with "The answer is: N" where N is a number.'


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
    formats = {
        "step by step": lambda p: [{"role": "user", "content": f"{STEP_BY_STEP}\n\nQuestion: {p.question}\n\n"
                                                                f"{STEP_BY_STEP_FORMAT}"}],
        "number only": lambda p: [{"role": "user", "content": f"Question: {p.question}\n\nReply with only the number."}],
    }
    for name, prompt in formats.items():
        outputs = backend.generate([prompt(p) for p in problems], SamplingParams(max_tokens=args.max_tokens))
        right = sum(task.verify(p, o[0].text).correct for p, o in zip(problems, outputs))
        print(f"{name}: {right}/{len(problems)} right")


if __name__ == "__main__":
    main()
