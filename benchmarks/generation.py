"""Batched generation pipeline vs one prompt per call (the paper's code style), and a warm-cache rerun.

Same problems, same model, same engine, in one run:
  python benchmarks/generation.py --problems 8 --max-tokens 64

Prints problems/minute and generated tokens/s for (a) the batched pipeline, (b) the same pipeline
sending one prompt per engine call, and (c) a rerun of (a) against its now-warm cache, with ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from reflectevo.backends import load_backend
from reflectevo.backends.cache import GenerationCache, Generator
from reflectevo.config import GenerateConfig
from reflectevo.stages.generate import Models, load_problems, run_reflections, run_trial1
from reflectevo.tasks import get_task


def run_pipeline(backend, batch_size: int, cache_path: Path, cfg: GenerateConfig, problems) -> dict:
    backend.batch_size = batch_size
    generator = Generator(backend, GenerationCache(cache_path))
    task = get_task(cfg.task)
    started = time.perf_counter()
    episodes = run_trial1(task, problems, generator, cfg)
    run_reflections(task, episodes, Models(generator, generator), cfg)
    seconds = time.perf_counter() - started
    prompts = len(episodes) + 2 * sum(len(ep.reflections) for ep in episodes)
    return {"seconds": seconds, "problems_per_min": 60 * len(problems) / seconds, "prompts": prompts,
            "engine_tokens": generator.generated_tokens,
            "tokens_per_s": generator.generated_tokens / seconds if generator.generated_tokens else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engine", default="hf")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    cfg = GenerateConfig(task=args.task, out="-", model=args.model, limit=args.problems, max_tokens=args.max_tokens,
                         reflection_max_tokens=args.max_tokens, num_instructions=1, samples=2)
    problems = load_problems(get_task(args.task), None, args.problems)
    backend = load_backend(args.model, args.engine)
    with tempfile.TemporaryDirectory() as tmp:
        batched = run_pipeline(backend, args.batch_size, Path(tmp) / "batched.sqlite", cfg, problems)
        single = run_pipeline(backend, 1, Path(tmp) / "single.sqlite", cfg, problems)
        warm = run_pipeline(backend, args.batch_size, Path(tmp) / "batched.sqlite", cfg, problems)

    print(f"\n{args.problems} {args.task} problems, {args.model} on {args.engine}, max_tokens={args.max_tokens}, "
          f"1 instruction x 2 reflections per failure")
    print(f"{'mode':<28}{'seconds':>10}{'problems/min':>14}{'tokens/s':>10}{'prompts':>9}{'tokens':>8}")
    for name, row in [(f"batched (batch {args.batch_size})", batched), ("one prompt per call", single),
                      ("batched, warm cache rerun", warm)]:
        print(f"{name:<28}{row['seconds']:>10.1f}{row['problems_per_min']:>14.1f}{row['tokens_per_s']:>10.1f}"
              f"{row['prompts']:>9}{row['engine_tokens']:>8}")
    print(f"\nbatched / one-per-call: {batched['tokens_per_s'] / single['tokens_per_s']:.2f}x tokens/s, "
          f"{batched['problems_per_min'] / single['problems_per_min']:.2f}x problems/min   (target >= 3x)")
    print(f"cold / warm rerun time: {batched['seconds'] / warm['seconds']:.0f}x   (target >= 50x)")


if __name__ == "__main__":
    main()
