"""The whole generate stage (trial 1 -> reflections -> trial 2) per engine, against baselines of the same run.

    python benchmarks/generation.py --problems 32 --max-tokens 128 --samples 4 --engines hf,openvino

Same problems, model and settings for every row; each engine runs in its own process, so its peak
memory (max RSS) is its own, on a fresh generation cache:
  <engine>               the stage as `reflectevo generate` runs it
  paper-style loop       the hf engine sent one prompt per call (the paper code's style), on a quarter
                         of the problems (tokens/s compare; it is too slow for all of them)
  warm rerun             the first engine's stage again on its now-warm cache
  twice the problems     the first engine's stage on 2x the problems, warm for the first half, against
                         the new half's own cost on a fresh cache (target: at most 1.15x)
Tokens/s is generated tokens per second of the whole stage (prompt processing, verification and cache
included), printed as a share of this machine's bf16 decode bound measured in the same run:
torch bf16 matmul FLOP/s / (2 x parameters).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path


def bf16_bound(parameters: int, threads: int = 2) -> tuple[float, float]:
    """(GFLOP/s of a 2048^2 bf16 matmul, decode tokens/s that allows for `parameters` weights)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048, dtype=torch.bfloat16), torch.randn(2048, 2048, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b

    def timed(rounds: int = 5) -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            a @ b
        return 2 * 2048 ** 3 * rounds / (time.perf_counter() - started) / 1e9

    gflops = max(timed() for _ in range(5))  # the best of 5: a busy moment lowers the bound, flattering the shares
    return gflops, gflops * 1e9 / (2 * parameters)


def count_prefill(backend) -> dict:
    """Count, per engine call, the prompt tokens an ideal prefix cache computes: each distinct prompt's
    tokens after the prefix it shares with the one before it in sorted order. Prefill costs the same
    2 FLOP per parameter per token as decoding, so this is the other part of the engine's work. The
    counting's own time ("seconds") is kept apart, so the stage's time can leave it out."""
    from reflectevo.backends.openvino import common_prefix

    counts, generate = {"tokens": 0, "seconds": 0.0}, backend.generate

    def counted(prompts, params):
        started = time.perf_counter()
        ids = sorted({tuple(backend.tokenizer(backend.render(m), add_special_tokens=False).input_ids)
                      for m in prompts})
        counts["tokens"] += sum(len(b) - common_prefix(a, b) for a, b in zip([()] + ids, ids))
        counts["seconds"] += time.perf_counter() - started
        return generate(prompts, params)

    backend.generate = counted
    return counts


def _stage(engine: str, options: dict, cfg_values: dict, limits: tuple[int, int], cache: str, queue) -> None:
    from reflectevo.backends.cache import GenerationCache, Generator
    from reflectevo.backends import load_backend
    from reflectevo.config import GenerateConfig
    from reflectevo.stages.generate import Models, load_problems, run_reflections, run_trial1
    from reflectevo.tasks import get_task

    cfg = GenerateConfig(out="-", **cfg_values)
    task = get_task(cfg.task)
    problems = load_problems(task, "train", limits[1])[limits[0]:]
    backend = load_backend(cfg.model, engine, **options)
    prefill = count_prefill(backend)
    generator = Generator(backend, GenerationCache(cache))
    started = time.perf_counter()
    episodes = run_trial1(task, problems, generator, cfg)
    run_reflections(task, episodes, Models(generator, generator), cfg)
    seconds = time.perf_counter() - started - prefill["seconds"]
    queue.put({"seconds": seconds, "tokens": generator.generated_tokens, "prefill": prefill["tokens"],
               "prompts": len(episodes) + 2 * sum(len(ep.reflections) for ep in episodes),
               "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    backend.close()


def stage(engine: str, cfg_values: dict, limits: tuple[int, int], cache: Path, **options) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_stage, args=(engine, options, cfg_values, limits, str(cache), queue))
    process.start()
    result = queue.get()
    process.join()
    result["tok_s"] = result["tokens"] / result["seconds"] if result["tokens"] else 0.0
    result["all_s"] = (result["tokens"] + result["prefill"]) / result["seconds"] if result["tokens"] else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--engines", default="hf,openvino", help="the first one also runs the rerun rows")
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--instructions", type=int, default=1)
    parser.add_argument("--samples", type=int, default=4, help="reflections per instruction (n)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM

    from reflectevo.backends.models import hf_folder, resolve

    model = AutoModelForCausalLM.from_pretrained(hf_folder(resolve(args.model)))
    parameters = sum(p.numel() for p in model.parameters())
    del model
    gflops, bound = bf16_bound(parameters)
    values = dict(task=args.task, model=args.model, max_tokens=args.max_tokens, reflection_max_tokens=args.max_tokens,
                  num_instructions=args.instructions, samples=args.samples)
    engines = args.engines.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for engine in engines:
            rows.append((engine, stage(engine, values, (0, args.problems), tmp / f"{engine}.sqlite")))
        quarter = max(1, args.problems // 4)
        rows.append(("paper-style loop (hf, 1 prompt per call)",
                     stage("hf", values, (0, quarter), tmp / "loop.sqlite", batch_size=1)))
        first = engines[0]
        rows.append((f"warm rerun ({first})", stage(first, values, (0, args.problems), tmp / f"{first}.sqlite")))
        twice = stage(first, values, (0, 2 * args.problems), tmp / f"{first}.sqlite")
        rows.append((f"twice the problems ({first}, first half cached)", twice))
        new_half = stage(first, values, (args.problems, 2 * args.problems), tmp / "new_half.sqlite")
        rows.append((f"the new half alone ({first}, fresh cache)", new_half))
    print(f"\n{args.problems} {args.task} train problems, {args.model}, {args.instructions} instruction(s) x "
          f"{args.samples} reflections per failure, max_tokens {args.max_tokens}")
    print(f"bf16 matmul {gflops:.0f} GFLOP/s -> decode bound {bound:.0f} tokens/s ({parameters / 1e6:.0f}M parameters)")
    print("tokens: generated; prefill: prompt tokens computed (shared prefixes once); % bound: generated, "
          "then generated + prefill, per second, as a share of the bound")
    print(f"{'run':<50}{'seconds':>9}{'prompts':>9}{'tokens':>9}{'prefill':>9}{'tok/s':>8}{'% bound':>9}"
          f"{'(+prefill)':>11}{'peak RSS':>10}")
    for name, r in rows:
        print(f"{name:<50}{r['seconds']:>9.1f}{r['prompts']:>9}{r['tokens']:>9}{r['prefill']:>9}{r['tok_s']:>8.0f}"
              f"{100 * r['tok_s'] / bound:>8.1f}%{100 * r['all_s'] / bound:>10.1f}%{r['rss_mb']:>8.0f} MB")
    by = dict(rows)
    loop = by["paper-style loop (hf, 1 prompt per call)"]
    print()
    for engine in (e for e in engines if e != "hf"):
        print(f"{engine}: {by[engine]['tok_s'] / by['hf']['tok_s']:.2f}x hf, "
              f"{by[engine]['tok_s'] / loop['tok_s']:.1f}x the paper-style loop (tokens/s of the whole stage)")
    print(f"warm rerun: {by[first]['seconds'] / max(rows[-3][1]['seconds'], 1e-3):.0f}x faster than cold")
    print(f"twice the problems: {twice['seconds'] / new_half['seconds']:.2f}x the new half's own cost (target <= 1.15)")


if __name__ == "__main__":
    main()
