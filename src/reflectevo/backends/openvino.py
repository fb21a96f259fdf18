"""OpenVINO GenAI backend (the `openvino` extra): ContinuousBatchingPipeline on CPU.

Continuous batching with prefix caching: every sample of every prompt in a call is one request, the
engine schedules them together (in waves that fit its KV cache) and computes a shared prompt prefix
once. Models are exported once to OpenVINO IR (openvino_export.py); GGUF presets go through their
converted HF folder, adapters are merged before export.

Chat rendering is HFBackend's: the HF tokenizer renders the model's own template and tokenises it with
`add_special_tokens=False`; the engine gets those token ids, and its output ids are decoded by the same
tokenizer, so prompts, end-of-turn handling and stop-string cutting follow one policy on both engines.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Sequence

from reflectevo.backends import ENGINES
from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.backends.models import ModelRef, fingerprint, hf_folder, resolve
from reflectevo.errors import BackendError
from reflectevo.records import Messages

#: end-of-turn tokens of chat models, beside the eos token (the list HFBackend uses)
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
#: prompt tokens two requests must share for their prefix to be computed once ahead (a few KV blocks)
SHARED_PREFIX = 64
#: tokens per KV-cache block of the CPU plugin (a prefix is shared in whole blocks)
KV_BLOCK = 32
#: share of the KV cache a wave of requests may plan to fill (the rest is slack for rounding)
KV_FILL = 0.9


@ENGINES.register("openvino",
                  "OpenVINO GenAI continuous batching on CPU, IR exported once (extra: openvino)", local=True)
def _factory(model: str, **options) -> Backend:
    return OpenVINOBackend(resolve(model), **options)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An engine's error message (often many lines) as one line for a BackendError."""
    return " ".join(str(exc).split())[:limit]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class OpenVINOBackend(Backend):
    """`precision`: "bf16" (default; f32 on CPUs without bf16 and with one thread) or "f32", for compute
    and KV cache. `cache_gb`: KV-cache size (GiB; a call's requests go in waves that fit it);
    `max_batched_tokens`: tokens per engine step; `threads`: inference threads (default: the CPUs this
    process may use)."""

    def __init__(self, ref: ModelRef, precision: str = "bf16", cache_gb: float = 2.0,
                 max_batched_tokens: int = 2048, threads: int | None = None, batch_size: int = 128, **_ignored):
        try:
            import openvino as ov
            import openvino_genai
        except ImportError as exc:
            raise BackendError("engine 'openvino' needs openvino-genai: pip install 'reflectevo[openvino]'") from exc
        if precision not in ("bf16", "f32"):
            raise BackendError(f"engine 'openvino': precision must be bf16 or f32, not {precision!r}")
        from transformers import AutoTokenizer

        from reflectevo.backends.openvino_export import ir_folder

        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        self.batch_size = batch_size
        folder = hf_folder(ref)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load the tokenizer of model {ref.name!r} from {folder}: {one_line(exc)}") from exc
        self.ir = ir_folder(ref)
        threads = threads or cpu_count()
        if precision == "bf16" and "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            precision = "f32"  # OpenVINO would fall back silently; name what actually computes
        if threads < 2:
            # openvino-genai 2026.4.1 kills the process (SIGFPE) building a pipeline with one inference
            # thread and bf16 compute or a u8/bf16 KV cache; f32 for both works (measured).
            precision = "f32"
        self.precision = precision
        self.settings = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision,
                         "KV_CACHE_PRECISION": precision}
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = max(1, round(cache_gb))  # GB
        scheduler.max_num_batched_tokens = max_batched_tokens
        scheduler.enable_prefix_caching = True
        self.scheduler = {"cache_gb": scheduler.cache_size, "max_batched_tokens": max_batched_tokens,
                          "prefix_caching": True}
        try:
            self._pipe = openvino_genai.ContinuousBatchingPipeline(str(self.ir), scheduler, "CPU", self.settings)
        except RuntimeError as exc:
            raise BackendError(f"OpenVINO cannot load model {ref.name!r} from {self.ir}: {one_line(exc)}") from exc
        self._eos = self._eos_ids(folder)
        self._genai, self._ov = openvino_genai, ov
        # Requests are sent in waves that fit the KV cache: past it the engine preempts running
        # requests, and preempted greedy requests came back empty or broken off (docs/backends.md).
        # cache_size counts GiB (measured: 2 gives 2,146,959,360 bytes).
        self.kv_tokens = int(KV_FILL * scheduler.cache_size * 2**30 / kv_bytes_per_token(folder, precision))
        self.scheduler["kv_tokens"] = self.kv_tokens

    def _eos_ids(self, folder) -> list[int]:
        from transformers import AutoConfig, GenerationConfig

        try:
            ids = GenerationConfig.from_pretrained(folder).eos_token_id
        except OSError:  # no generation_config.json: transformers derives it from config.json
            ids = GenerationConfig.from_model_config(AutoConfig.from_pretrained(folder)).eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        for token in END_OF_TURN:
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    @property
    def cache_identity(self) -> str:
        # The same weights give other text in another precision or on another engine. "kv-waves": text
        # cached before requests went in waves may come from preempted requests (docs/backends.md).
        return f"OpenVINOBackend:ir-fp16:kv-waves:{self.precision}:{self.fingerprint}"

    def describe(self) -> dict:
        return {**super().describe(), "ir": str(self.ir), "weights": "fp16", "precision": self.precision,
                "threads": self.settings["INFERENCE_NUM_THREADS"], **self.scheduler}

    def render(self, messages: Messages) -> str:
        """The model's own chat template, exactly as HFBackend.render()."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def prompt_ids(self, messages: Messages) -> list[int]:
        """The token ids the engine is given: what HFBackend.generate tokenises."""
        return self.tokenizer(self.render(messages), add_special_tokens=False).input_ids

    def _config(self, params: SamplingParams, seed: int):
        config = self._genai.GenerationConfig()
        config.max_new_tokens = params.max_tokens
        config.stop_token_ids = set(self._eos)
        if params.stop:
            config.stop_strings = set(params.stop)
            config.include_stop_str_in_output = True  # cut below, as HFBackend does
        if params.temperature > 0:
            config.do_sample = True
            config.temperature = params.temperature
            config.top_p = params.top_p
            config.top_k = 0  # off, as on the other engines
            config.rng_seed = seed
        return config

    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        """n samples per prompt, sample i seeded params.seed + i; each sample is its own engine request."""
        plan = per_prompt(prompts, params)
        flat = self._requests([(m, p.sample(i)) for m, p in zip(prompts, plan) for i in range(p.n)])
        out, at = [], 0
        for p in plan:
            out.append(flat[at:at + p.n])
            at += p.n
        return out

    def _requests(self, requests: Sequence[tuple[Messages, SamplingParams]]) -> list[Completion]:
        """One completion per (messages, one-sample params) request, sent to the engine in waves that fit
        its KV cache (one wave unless the call's worst case outgrows it).

        Each request is its own engine request with its own random generator (rng_seed), so which
        requests share the batch does not change the random draws. It can change the logits' rounding:
        measured (docs/backends.md), f32 text is batch-invariant (greedy 8/8, sampled 31/32), bf16 is
        not (greedy 4/8, sampled 1/32 alike after 64 tokens). Greedy ignores the seed and computes
        each distinct prompt once.
        """
        import numpy as np

        keys = [(tuple(self.prompt_ids(m)), p if p.temperature > 0 else replace(p, seed=0)) for m, p in requests]
        unique = list(dict.fromkeys(keys))
        done = {}
        for wave in kv_waves([(ids, p.max_tokens) for ids, p in unique], self.kv_tokens):
            members = [unique[i] for i in wave]
            inputs = [self._ov.Tensor(np.array([ids], dtype=np.int64)) for ids, _ in members]
            try:
                self._warm_prefixes([ids for ids, _ in members])
                results = self._pipe.generate(inputs, [self._config(p, p.seed) for _, p in members])
            except RuntimeError as exc:
                raise BackendError(f"OpenVINO generation failed for model {self.name!r}: {one_line(exc)}") from exc
            for key, result in zip(members, results):
                if not result.m_generation_ids:
                    raise BackendError(f"OpenVINO dropped a request for model {self.name!r}: its prompt "
                                       f"({len(key[0])} tokens) does not fit the KV cache (cache_gb)")
                done[key] = self._completion(list(result.m_generation_ids[0]), key[1])
        return [Completion(text=done[k].text, tokens=done[k].tokens, finish_reason=done[k].finish_reason)
                for k in keys]

    def _warm_prefixes(self, prompts: Sequence[tuple[int, ...]]) -> None:
        """Compute each shared prompt prefix once before the requests that share it start.

        The engine's prefix cache serves only blocks finished in an earlier step: requests that share a
        prompt (the n samples of a reflection prompt) or a long prefix (the trial-2 prompts of one failure)
        and start together each compute it, which made 32 prompts x 4 samples cost 4x the prefill of the
        32 prompts (measured, docs/backends.md). So one member of each group sharing at least
        `SHARED_PREFIX` tokens is sent first for one token; the rest then find its blocks cached.
        """
        import numpy as np

        first = prefix_leaders(prompts)
        if not first:
            return
        config = self._genai.GenerationConfig()
        config.max_new_tokens = 1
        self._pipe.generate([self._ov.Tensor(np.array([ids], dtype=np.int64)) for ids in first], [config] * len(first))

    def _completion(self, ids: list[int], params: SamplingParams) -> Completion:
        # The same post-processing as HFBackend.generate: stop at the first end token, decode without
        # special tokens, cut stop strings from the text.
        finished = next((i for i, t in enumerate(ids) if t in self._eos), None)
        kept = ids[:finished] if finished is not None else ids
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        reason = "stop" if finished is not None or len(ids) < params.max_tokens else "length"
        for stop in params.stop:
            cut = text.find(stop)
            if cut >= 0:
                text, reason = text[:cut], "stop"
        return Completion(text=text, tokens=len(kept), finish_reason=reason)

    def close(self) -> None:
        self._pipe = None


def kv_bytes_per_token(folder, precision: str) -> int:
    """KV-cache bytes one token takes: keys and values of every layer, from the model's config.json."""
    config = json.loads((folder / "config.json").read_text())
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return 2 * config["num_hidden_layers"] * kv_heads * head_dim * (2 if precision == "bf16" else 4)


def kv_waves(requests: Sequence[tuple[tuple[int, ...], int]], capacity: int, block: int = KV_BLOCK) -> list[list[int]]:
    """Indices of (prompt ids, max new tokens) requests in waves whose worst case fits `capacity` tokens.

    A request may take its prompt plus max new tokens, in whole blocks; the whole blocks of the prompt
    prefix it shares with the request before it (sorted order puts sharing prompts side by side) are
    stored once. A request bigger than the cache goes alone, and the engine drops it (an error above).
    """
    waves: list[list[int]] = []
    used, previous = 0, ()
    for i in sorted(range(len(requests)), key=lambda i: requests[i][0]):
        ids, new = requests[i]
        whole = -(-(len(ids) + new) // block)
        need = whole - common_prefix(previous, ids) // block if used else whole
        if not waves or used + need > capacity // block:
            waves.append([])
            used, need = 0, whole
        waves[-1].append(i)
        used += need
        previous = ids
    return waves


def prefix_leaders(prompts: Sequence[tuple[int, ...]], shared: int = SHARED_PREFIX) -> list[tuple[int, ...]]:
    """One prompt per group of prompts that share at least `shared` leading tokens (groups of one are
    left out: nothing to share). Sorted order puts prompts with a common prefix next to each other."""
    groups: list[list] = []
    for ids in sorted(prompts):
        if groups and common_prefix(groups[-1][0], ids) >= shared:
            groups[-1][1] += 1
        else:
            groups.append([ids, 1])
    return [ids for ids, members in groups if members > 1]


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token id sequences."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)
