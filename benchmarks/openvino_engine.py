"""The openvino engine against HF on the same GSM8K trial-1 prompts, and how to seed samples on it.

    python benchmarks/openvino_engine.py --problems 32 --max-tokens 64            # speed: HF vs openvino
    python benchmarks/openvino_engine.py --problems 32 --max-tokens 64 --seeds    # + per-sample seeds
    python benchmarks/openvino_engine.py --seeds --no-speed --precision f32       # seeds only, f32
    python benchmarks/openvino_engine.py --prefix --no-speed                      # shared-prefix warm-up

Speed: each engine in its own process (peak RSS is its own), n=1 greedy and n=4 at temperature 0.8,
tokens/s and openvino/HF ratios. HF is the default engine's setting (bf16, batch 16).

--seeds (openvino only), 4 samples per prompt at temperature 0.8:
  (i)  one request per prompt, num_return_sequences=4, rng_seed=seed
  (ii) four requests per prompt, num_return_sequences=1, rng_seed=seed+i (what the backend does)
then whether a (prompt, seed) request gives the same text alone as inside the whole batch, and whether
greedy output is the same alone and in a batch of all prompts.

--prefix (openvino only): the prefill of long prompts (a GSM8K question and a 300-token attempt), each
distinct prompt once against 4 samples per prompt starting together, with the backend's shared-prefix
warm-up and without it (max_tokens 1, so the time is the prompts' processing; fresh prompts each time).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time


def prompts_for(count: int):
    from reflectevo.tasks import get_task

    task = get_task("gsm8k")
    return [task.prompt(p) for p in task.load("test")[:count]]


def _speed(engine: str, options: dict, prompts, max_tokens: int, queue) -> None:
    from reflectevo.backends import SamplingParams, load_backend

    started = time.perf_counter()
    backend = load_backend("smollm2-135m", engine, **options)
    load_s = time.perf_counter() - started
    backend.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up
    rows = {"load_s": load_s}
    for label, params in (("n1", SamplingParams(max_tokens=max_tokens)),
                          ("n4", SamplingParams(max_tokens=max_tokens, temperature=0.8, n=4, seed=1))):
        started = time.perf_counter()
        tokens = 0
        for start in range(0, len(prompts), backend.batch_size):
            tokens += sum(c.tokens for outs in backend.generate(prompts[start:start + backend.batch_size], params)
                          for c in outs)
        rows[label] = tokens / (time.perf_counter() - started)
    rows["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(rows)
    backend.close()


def isolated(engine: str, options: dict, prompts, max_tokens: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_speed, args=(engine, options, prompts, max_tokens, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def seeds(prompts, max_tokens: int, alone: int, precision: str) -> dict:
    """Route (i) vs (ii) speed, seed independence of (ii), batch invariance of greedy decoding."""
    import numpy as np

    from reflectevo.backends import SamplingParams, load_backend

    backend = load_backend("smollm2-135m", "openvino", precision=precision)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.8, n=4, seed=11)
    tensors = [backend._ov.Tensor(np.array([backend.prompt_ids(m)], dtype=np.int64)) for m in prompts]
    backend.generate(prompts[:1], SamplingParams(max_tokens=4))  # warm-up

    def one_request_per_prompt():
        configs = []
        for _ in prompts:
            config = backend._config(params, params.seed)
            config.num_return_sequences = params.n
            configs.append(config)
        results = backend._pipe.generate(tensors, configs)
        return sum(len(ids) for r in results for ids in r.m_generation_ids)

    out = {}
    for label, run in (("i_num_return_sequences", one_request_per_prompt),
                       ("ii_request_per_sample", lambda: sum(
                           c.tokens for outs in backend.generate(prompts, params) for c in outs))):
        started = time.perf_counter()
        tokens = run()
        out[label + "_tok_s"] = tokens / (time.perf_counter() - started)

    batch = backend.generate(prompts, params)
    requests = [(prompts[p], params.sample(i)) for p in range(min(alone, len(prompts))) for i in range(params.n)]
    by_one = [backend.generate([m], [p])[0][0].text for m, p in requests]
    in_batch = [batch[p][i].text for p in range(min(alone, len(prompts))) for i in range(params.n)]
    out["seeded_same_alone_as_in_batch"] = f"{sum(a == b for a, b in zip(by_one, in_batch))}/{len(requests)}"
    out["distinct_samples_per_prompt"] = sum(len({c.text for c in outs}) for outs in batch) / len(batch)

    greedy = SamplingParams(max_tokens=max_tokens)
    together = [outs[0].text for outs in backend.generate(prompts, greedy)]
    single = [backend.generate([m], greedy)[0][0].text for m in prompts[:alone]]
    out["greedy_same_alone_as_in_batch"] = f"{sum(a == b for a, b in zip(single, together))}/{len(single)}"
    fresh = load_backend("smollm2-135m", "openvino", precision=precision)  # a cold prefix cache, a new engine
    again = [outs[0].text for outs in fresh.generate(prompts, greedy)]
    out["greedy_same_on_fresh_engine"] = f"{sum(a == b for a, b in zip(again, together))}/{len(together)}"
    again = fresh.generate(prompts, params)
    out["sampled_same_on_fresh_engine"] = (f"{sum(a.text == b.text for x, y in zip(again, batch) for a, b in zip(x, y))}"
                                           f"/{len(prompts) * params.n}")
    return out


def prefix(count: int) -> dict:
    from reflectevo.backends import SamplingParams, load_backend
    from reflectevo.backends.openvino import OpenVINOBackend

    backend = load_backend("smollm2-135m", "openvino")
    attempt = "The answer follows from adding the numbers step by step. " * 25

    def prompts(tag: str):
        return [[{"role": "user", "content": f"{m[-1]['content']}\n\n{tag} Here is an attempt:\n{attempt}"}]
                for m in prompts_for(count)]

    def timed(tag: str, samples: int) -> float:
        requests = [(m, SamplingParams(temperature=0.8, max_tokens=1, seed=s)) for m in prompts(tag)
                    for s in range(samples)]
        started = time.perf_counter()
        backend._requests(requests)
        return time.perf_counter() - started

    timed("warm-up", 1)
    out = {"prompt_tokens": sum(len(backend.prompt_ids(m)) for m in prompts("a")) / count,
           "distinct_once_s": timed("a", 1), "x4_with_warmup_s": timed("b", 4)}
    warm = OpenVINOBackend._warm_prefixes
    OpenVINOBackend._warm_prefixes = lambda self, prompts: None
    try:
        out["x4_without_warmup_s"] = timed("c", 4)
    finally:
        OpenVINOBackend._warm_prefixes = warm
    backend.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seeds", action="store_true", help="also measure the per-sample seed routes")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "f32"], help="the openvino engine's")
    parser.add_argument("--prefix", action="store_true", help="measure the shared-prefix warm-up")
    parser.add_argument("--no-speed", action="store_true", help="skip the HF vs openvino speed runs")
    parser.add_argument("--alone", type=int, default=8, help="prompts re-run one at a time for the invariance checks")
    args = parser.parse_args()
    prompts = prompts_for(args.problems)
    report = {"problems": len(prompts), "max_tokens": args.max_tokens, "precision": args.precision}
    if not args.no_speed:
        hf = isolated("hf", {"batch_size": 16}, prompts, args.max_tokens)
        ov = isolated("openvino", {"precision": args.precision}, prompts, args.max_tokens)
        report.update(hf_bf16_batch16=hf, openvino=ov, ratio_n1=ov["n1"] / hf["n1"], ratio_n4=ov["n4"] / hf["n4"])
    if args.seeds:
        report["seeds"] = seeds(prompts, args.max_tokens, args.alone, args.precision)
    if args.prefix:
        report["prefix"] = prefix(args.problems)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
