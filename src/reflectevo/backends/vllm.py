"""vLLM offline backend (the `vllm` extra, CUDA only): continuous batching, prefix caching, tensor parallel.

vLLM pins its own torch and transformers (RUNTIME.md), so it lives in its own environment on a GPU
machine. Automatic prefix caching is on: reflection and trial-2 prompts start with the whole trial-1
conversation, whose KV blocks vLLM then reuses instead of recomputing.

Written against vLLM's documented offline API (LLM, LLM.chat, SamplingParams); not run on a GPU in the
task that wrote it (see docs/backends.md and tests/test_backend_vllm.py, marked `gpu`).
"""

from __future__ import annotations

from typing import Sequence

from reflectevo.backends import register_engine
from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.backends.models import ModelRef, fingerprint, hf_folder, resolve
from reflectevo.errors import BackendError
from reflectevo.records import Messages


@register_engine("vllm", "vLLM offline on GPUs: prefix caching, tensor parallelism (extra: vllm)")
def _factory(model: str, **options) -> Backend:
    return VLLMBackend(resolve(model), **options)


class VLLMBackend(Backend):
    def __init__(self, ref: ModelRef, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = 4096, dtype: str = "auto", batch_size: int = 256,
                 enable_prefix_caching: bool = True, **_ignored):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise BackendError("engine 'vllm' needs vLLM on a CUDA machine, in its own environment: "
                               "pip install 'reflectevo[vllm]'") from exc
        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        # vLLM schedules continuously; large batches just give it more to schedule.
        self.batch_size = batch_size
        self.tensor_parallel_size = tensor_parallel_size
        options = dict(model=str(hf_folder(ref)), tensor_parallel_size=tensor_parallel_size,
                       gpu_memory_utilization=gpu_memory_utilization, dtype=dtype,
                       enable_prefix_caching=enable_prefix_caching, max_model_len=max_model_len)
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
        return {**super().describe(), "tensor_parallel_size": self.tensor_parallel_size}

    def close(self) -> None:
        del self.llm
