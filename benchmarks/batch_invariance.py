"""Does batch composition change answers? Same prompts, same seeds, three batchings, per engine.

    python benchmarks/batch_invariance.py --engine hf --problems 200 --max-tokens 16

Runs the task's test prompts (a) in the engine's batches in order, (b) shuffled, (c) a sample of them
one prompt per call, greedy and sampled (one seed per prompt), and prints how many texts differ from
(a). An engine is batch invariant when every count is 0; the generation cache's resume guarantee
(a resumed run equals an uninterrupted one) holds exactly there (docs/backends.md).
"""

from __future__ import annotations

import argparse
import random
import time

from reflectevo.backends import SamplingParams, load_backend
from reflectevo.backends.cache import sample_seed
from reflectevo.tasks import get_task


def texts(backend, prompts, params) -> list[str]:
    out = []
    for start in range(0, len(prompts), backend.batch_size):
        out += [c[0].text for c in backend.generate(prompts[start:start + backend.batch_size],
                                                    params[start:start + backend.batch_size])]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="add")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engine", default="hf")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--alone", type=int, default=24, help="prompts also sent one per call")
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()

    task = get_task(args.task)
    prompts = [task.prompt(p) for p in task.load("test")[:args.problems]]
    backend = load_backend(args.model, args.engine)
    order = list(range(len(prompts)))
    random.Random(0).shuffle(order)
    print(f"{args.engine}: {len(prompts)} {args.task} test prompts, {args.max_tokens} tokens, batch {backend.batch_size}")
    for name, temperature in (("greedy", 0.0), ("sampled T=0.8", 0.8)):
        params = [SamplingParams(temperature=temperature, max_tokens=args.max_tokens,
                                 seed=sample_seed(0, m, 0)) for m in prompts]
        started = time.perf_counter()
        base = texts(backend, prompts, params)
        shuffled = texts(backend, [prompts[i] for i in order], [params[i] for i in order])
        back = [""] * len(prompts)
        for i, text in zip(order, shuffled):
            back[i] = text
        alone = [backend.generate([prompts[i]], [params[i]])[0][0].text for i in range(args.alone)]
        print(f"  {name}: shuffled batches change {sum(a != b for a, b in zip(base, back))} of {len(base)}; "
              f"one per call changes {sum(a != b for a, b in zip(base, alone))} of {args.alone} "
              f"({time.perf_counter() - started:.0f} s)")
    backend.close()


if __name__ == "__main__":
    main()
