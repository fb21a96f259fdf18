"""Training throughput on the default model: tokens/s, peak memory and the share of this machine's compute
bound, for LoRA SFT, full SFT and DPO (LoRA).

    python benchmarks/training.py [--steps 4] [--batch-size 4] [--max-length 512] [--json out.json]

Each configuration runs in its own process (peak memory is a per-process high-water mark). The compute
bound is 6 x parameters FLOPs per trained token (forward 2N + backward 4N) at the matmul FLOP/s this
machine reaches in the training dtype, measured by a matmul probe in the same run. DPO also runs a
reference forward (2N per token), which the 6N figure does not count: its ratio is a lower bound.
Rows are real curated rows (the tests' SmolLM2 gsm8k episodes through `reflectevo curate`), repeated.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPISODES = REPO / "tests" / "data" / "gsm8k_episodes.jsonl"
CONFIGS = {
    "sft-lora": dict(setting="I", full=False),
    "sft-full": dict(setting="I", full=True),
    "dpo-lora": dict(setting="III", full=False),
}


def matmul_flops(dtype_name: str, size: int = 2048, seconds: float = 3.0) -> float:
    """Sustained FLOP/s of a square matmul in `dtype_name` on this machine (CPU or GPU)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, dtype_name)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        runs += 1
        if device == "cuda":
            torch.cuda.synchronize()
    return 2 * size**3 * runs / (time.perf_counter() - start)


def curated(folder: Path) -> Path:
    from reflectevo.stages.curate import CurateConfig, curate

    return curate(CurateConfig(source=str(EPISODES), out=str(folder / "curated"), validation=0.0,
                               dedup="none"))


def run_one(name: str, steps: int, batch_size: int, max_length: int, workdir: Path) -> dict:
    """Train `steps` + 1 steps (the first is warm-up) and time the others; in this process."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from reflectevo.training import TrainConfig, dpo, sft
    from reflectevo.training.chat import fits
    from reflectevo.training.common import load_model, load_tokenizer, precision, resolve_base
    from reflectevo.training.data import load_setting

    spec = CONFIGS[name]
    cfg = TrainConfig(data=str(curated(workdir)), out=str(workdir / name), max_steps=steps + 1,
                      batch_size=batch_size, max_length=max_length, logging_steps=1, save_steps=10**6,
                      learning_rate=1e-5, **spec)
    ((_, data),) = load_setting(cfg.data, cfg.setting)
    ref = resolve_base(cfg)
    tokenizer = load_tokenizer(ref)
    rows, _ = fits(tokenizer, data.train, max_length)
    rows = (rows * (batch_size * (steps + 1) // len(rows) + 1))[: batch_size * (steps + 1)]
    model = load_model(ref)
    params = sum(p.numel() for p in model.parameters())

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    timer = Timer()
    build = sft.build_trainer if data.kind == "sft" else dpo.build_trainer
    trainer = build(cfg, model, tokenizer, Dataset.from_list(rows), None, Path(cfg.out), [timer])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # trained tokens (padding excluded)
    ds = trainer.train_dataset
    if data.kind == "sft":
        per_row = [len(ids) for ids in ds["input_ids"]]
    else:  # the policy sees prompt+chosen and prompt+rejected
        per_row = [2 * len(p) + len(c) + len(r) for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"],
                                                                    ds["rejected_ids"])]
    per_row = [min(n, max_length) if data.kind == "sft" else n for n in per_row]
    # the sampler shuffles rows, so count the mean row length times the rows of the timed steps
    tokens = sum(per_row) / len(per_row) * batch_size * (len(timer.times) - 1)
    seconds = sum(timer.times[1:])
    flags = precision(cfg)
    dtype = "bfloat16" if flags["bf16"] else "float16" if flags["fp16"] else "float32"
    peak = (torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"config": name, "params": params, "dtype": dtype, "steps": len(timer.times) - 1,
            "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "s_per_step": seconds / max(1, len(timer.times) - 1), "peak_memory_gb": peak,
            "memory_kind": "GPU allocated" if torch.cuda.is_available() else "process RSS"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per configuration (after 1 warm-up)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", help="write the results here too")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    args = parser.parse_args()
    os.environ.setdefault("REFLECTEVO_NO_PROGRESS", "1")
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(run_one(args.one, args.steps, args.batch_size, args.max_length,
                                                 Path(tmp))))
        return

    results = []
    for name in args.configs.split(","):
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps),
                               "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)],
                              capture_output=True, text=True)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        results.append(json.loads(line[len("RESULT "):]))
    probes = {dtype: matmul_flops(dtype) for dtype in sorted({r["dtype"] for r in results})}

    print(f"\nmatmul probe (2048x2048): " + ", ".join(f"{d} {f / 1e9:.1f} GFLOP/s" for d, f in probes.items()))
    print(f"batch {args.batch_size} x max {args.max_length} tokens, {args.steps} timed steps after 1 warm-up; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}\n")
    header = f"{'config':<10} {'dtype':<9} {'tokens/s':>9} {'s/step':>7} {'peak GB':>8} {'6N GFLOP/s':>11} {'of bound':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        achieved = 6 * r["params"] * r["tokens_per_s"]
        r["achieved_6n_flops"] = achieved
        r["matmul_flops"] = probes[r["dtype"]]
        r["ratio_to_bound"] = achieved / probes[r["dtype"]]
        print(f"{r['config']:<10} {r['dtype']:<9} {r['tokens_per_s']:>9.1f} {r['s_per_step']:>7.2f} "
              f"{r['peak_memory_gb']:>8.2f} {achieved / 1e9:>11.2f} {r['ratio_to_bound']:>8.1%}")
    print(f"\nparameters N = {results[0]['params'] / 1e6:.1f} M; peak memory = {results[0]['memory_kind']}; "
          "DPO tokens count prompt+chosen and prompt+rejected (its reference forward is extra work)")
    if args.json:
        Path(args.json).write_text(json.dumps({"probes": probes, "results": results}, indent=2))


if __name__ == "__main__":
    main()
