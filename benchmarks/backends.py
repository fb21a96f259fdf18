"""Backends side by side on the same prompts, the pipeline's overhead, and decode speed vs the hardware bound.

    python benchmarks/backends.py --problems 8 --max-tokens 64

One run, same greedy trial-1 prompts (GSM8K) for every backend, each backend in its own process so
peak memory (max RSS) is its own:
  hf        transformers, batched (batch 16, bf16)
  llamacpp  llama-cpp-python, 2 instances x 1 thread
  openai    the HTTP backend -> a llama-cpp-python server (1 process, 1 thread); server RSS reported
Then: pipeline overhead = Generator (cache-miss path, fresh SQLite cache) vs the raw backend on the
identical requests (target < 10%), and decode tokens/s vs the bounds of this machine for the default
model: compute bound = matmul FLOP/s / (2 x params), memory bound = bandwidth / weight bytes per token.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def prompts_for(task_name: str, count: int):
    from reflectevo.stages.generate import load_problems
    from reflectevo.tasks import get_task

    task = get_task(task_name)
    return [task.prompt(p) for p in load_problems(task, None, count)]


def _run_backend(engine: str, options: dict, prompts, max_tokens: int, queue) -> None:
    from reflectevo.backends import SamplingParams, load_backend

    backend = load_backend("smollm2-135m", engine, **options)
    params = SamplingParams(max_tokens=max_tokens)
    backend.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up
    started = time.perf_counter()
    outs = []
    for start in range(0, len(prompts), backend.batch_size):
        outs += backend.generate(prompts[start:start + backend.batch_size], params)
    seconds = time.perf_counter() - started
    tokens = sum(o[0].tokens for o in outs)
    queue.put({"seconds": seconds, "tokens": tokens, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    backend.close()


def run_isolated(engine: str, options: dict, prompts, max_tokens: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_run_backend, args=(engine, options, prompts, max_tokens, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    from reflectevo.backends.models import resolve

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "reflectevo.backends.llamacpp", "--model",
                                str(resolve("smollm2-135m").gguf), "--host", "127.0.0.1", "--port", str(port),
                                "--n_threads", str(threads), "--n_ctx", "4096", "--verbose", "False"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/models", timeout=2)
            return process, url
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("server did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pipeline_overhead(prompts, max_tokens: int) -> dict:
    """Generator on a fresh cache vs backend.generate on the same batches, llama.cpp, twice each, best of."""
    from reflectevo.backends import SamplingParams, load_backend
    from reflectevo.backends.cache import GenerationCache, Generator

    backend = load_backend("smollm2-135m", "llamacpp")
    params = SamplingParams(max_tokens=max_tokens)
    raw, piped = [], []
    for round_ in range(2):
        started = time.perf_counter()
        for start in range(0, len(prompts), backend.batch_size):
            backend.generate(prompts[start:start + backend.batch_size], params)
        raw.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as tmp:
            generator = Generator(backend, GenerationCache(Path(tmp) / "c.sqlite"))
            started = time.perf_counter()
            generator.generate(prompts, params)
            piped.append(time.perf_counter() - started)
    backend.close()
    return {"raw_s": min(raw), "pipeline_s": min(piped), "overhead": min(piped) / min(raw) - 1}


def hardware_bounds(threads: int = 2) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    started, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    flops = 2 * 1024 ** 3 * reps / (time.perf_counter() - started)
    src = np.ones(256 << 20, dtype=np.uint8)  # 256 MiB, far beyond the caches
    dst = np.empty_like(src)
    started = time.perf_counter()
    for _ in range(5):
        np.copyto(dst, src)
    bandwidth = 2 * src.nbytes * 5 / (time.perf_counter() - started)  # read + write
    return {"fp32_matmul_gflops": flops / 1e9, "copy_bandwidth_gbs": bandwidth / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    prompts = prompts_for(args.task, args.problems)
    rows = {}
    print(f"\n{len(prompts)} {args.task} trial-1 prompts, greedy, max_tokens={args.max_tokens}")
    print(f"{'backend':<30}{'seconds':>9}{'tokens':>8}{'tokens/s':>10}{'problems/min':>14}{'peak RSS MB':>13}")

    def show(name: str, row: dict) -> None:
        rows[name] = row
        rss = f"{row['rss_mb']:.0f}" + (f" (+server {row['server_rss_mb']:.0f})" if "server_rss_mb" in row else "")
        print(f"{name:<30}{row['seconds']:>9.1f}{row['tokens']:>8}{row['tokens'] / row['seconds']:>10.1f}"
              f"{60 * len(prompts) / row['seconds']:>14.1f}  {rss}", flush=True)

    show("hf (batch 16, bf16)", run_isolated("hf", {"batch_size": 16}, prompts, args.max_tokens))
    show("llamacpp (2 x 1 thread)", run_isolated("llamacpp", {}, prompts, args.max_tokens))
    show("llamacpp (1 x 2 threads)", run_isolated("llamacpp", {"instances": 1, "threads": 2}, prompts, args.max_tokens))
    server, url = start_server(threads=1)
    try:
        row = run_isolated("openai", {"base_url": url, "batch_size": 64}, prompts, args.max_tokens)
        row["server_rss_mb"] = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait()
    show("openai -> llama.cpp server", row)

    overhead = pipeline_overhead(prompts, args.max_tokens)
    print(f"\npipeline overhead (llamacpp, Generator + fresh cache vs raw backend, best of 2): "
          f"{overhead['raw_s']:.2f}s raw, {overhead['pipeline_s']:.2f}s pipeline, {100 * overhead['overhead']:+.1f}%"
          "   (target < 10%)")

    from reflectevo.backends.models import resolve

    gguf = resolve("smollm2-135m").gguf
    params = 134.5e6  # SmolLM2-135M: 30 layers x d576, tied embeddings (config.json)
    bounds = hardware_bounds()
    compute_tps = bounds["fp32_matmul_gflops"] * 1e9 / (2 * params)
    memory_tps = bounds["copy_bandwidth_gbs"] * 1e9 / gguf.stat().st_size
    best = max(rows.values(), key=lambda r: r["tokens"] / r["seconds"])
    single = rows["llamacpp (1 x 2 threads)"]
    print(f"\nmachine: fp32 matmul {bounds['fp32_matmul_gflops']:.1f} GFLOP/s, copy bandwidth "
          f"{bounds['copy_bandwidth_gbs']:.1f} GB/s (2 threads)")
    print(f"compute bound: {compute_tps:.0f} tokens/s (2 x {params / 1e6:.0f}M FLOPs per token); "
          f"memory bound for one stream: {memory_tps:.0f} tokens/s ({gguf.stat().st_size / 1e6:.0f} MB of weights per token)")
    print(f"measured decode: best {best['tokens'] / best['seconds']:.0f} tokens/s = "
          f"{100 * best['tokens'] / best['seconds'] / compute_tps:.0f}% of the compute bound; one llama.cpp stream "
          f"{single['tokens'] / single['seconds']:.0f} tokens/s = "
          f"{100 * single['tokens'] / single['seconds'] / memory_tps:.0f}% of its memory bound")
    print(json.dumps({"rows": rows, "overhead": overhead, "bounds": bounds}, default=float))


if __name__ == "__main__":
    main()
