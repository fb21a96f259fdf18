"""What prefix reuse saves on reflection / trial-2 prompts, which start with the whole trial-1 conversation.

    python benchmarks/prefix_cache.py --problems 6 --max-tokens 48

One run, llama.cpp engine, one instance: trial 1 on each problem, then for each problem its reflection
prompt (trial-1 messages + answer + a reflection request) right after its trial-1 prompt, with
`prefix_reuse` off (each prompt evaluated from scratch: the default, reproducible) and on (llama.cpp
keeps the KV cache of the shared prefix). Prints prompt tokens, how many the reuse skipped, and time.
vLLM (`enable_prefix_caching=True`) and vLLM/SGLang servers do the same across a whole batch on GPUs.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--problems", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()

    from reflectevo.backends import SamplingParams, load_backend
    from reflectevo.prompts.templates import reflection_prompt
    from reflectevo.stages.generate import load_problems
    from reflectevo.tasks import get_task

    task = get_task(args.task)
    problems = load_problems(task, None, args.problems)
    trial1 = [task.prompt(p) for p in problems]
    params = SamplingParams(max_tokens=args.max_tokens)
    rows = {}
    for reuse in (False, True):
        backend = load_backend("smollm2-135m", "llamacpp", instances=1, threads=1, prefix_reuse=reuse)
        llm = backend._llms[0]
        answers = [o[0].text for o in backend.generate(trial1, params)]
        # The pipeline's order when a problem's follow-up comes right after it: trial 1, then its reflection.
        pairs = [(t, reflection_prompt(t, a, "incorrect", "Explain what went wrong.")) for t, a in zip(trial1, answers)]
        evaluated = total = 0
        started = time.perf_counter()
        for first, follow_up in pairs:
            for messages in (first, follow_up):
                ids = backend._tokens(llm, backend.render(messages))
                before = llm.n_tokens
                shared = 0
                if reuse:
                    for a, b in zip(llm._input_ids[:before], ids):
                        if a != b:
                            break
                        shared += 1
                total += len(ids)
                evaluated += len(ids) - max(0, min(shared, len(ids) - 1))
                backend.generate([messages], params)
        rows[reuse] = {"seconds": time.perf_counter() - started, "prompt_tokens": total, "evaluated": evaluated}
        backend.close()

    print(f"\n{len(problems)} {args.task} problems: trial-1 prompt then its reflection prompt, max_tokens={args.max_tokens}")
    for reuse, row in rows.items():
        print(f"prefix_reuse={str(reuse):<6} {row['seconds']:7.1f}s  prompt tokens {row['prompt_tokens']}, "
              f"evaluated {row['evaluated']} ({100 * (1 - row['evaluated'] / row['prompt_tokens']):.0f}% skipped)")
    print(f"time saved by reuse: {100 * (1 - rows[True]['seconds'] / rows[False]['seconds']):.0f}%")


if __name__ == "__main__":
    main()
