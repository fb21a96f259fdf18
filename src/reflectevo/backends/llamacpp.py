"""llama.cpp backend (llama-cpp-python, the `llamacpp` extra): GGUF models on CPU.

llama-cpp-python's `Llama` runs one sequence at a time (no batching across prompts, no n>1 per call),
so concurrency across problems comes from a few `Llama` instances, one OS thread each (the C calls
release the GIL). One thread per instance also avoids llama.cpp's OpenMP spin-barriers, which collapse
when the cores are shared with other processes (measured: 2 threads on a loaded 2-core machine fell
to ~1 token/s, 1 thread kept ~20).

Prefix reuse: the n samples of a prompt share its evaluated prompt (only the last token is re-run).
Across prompts, llama-cpp-python can also reuse the longest common prefix with the instance's previous
prompt (`prefix_reuse=True`), but then a sampled completion depends on which prompt the instance ran
before (measured: same prompt and seed, different text), and which instance runs what depends on
timing. Reproducible runs matter more here, so each new prompt starts from a clean state by default;
benchmarks/prefix_cache.py measures what the reuse would save.

Run as `python -m reflectevo.backends.llamacpp --model X.gguf --port N` to start llama-cpp-python's
OpenAI-compatible server with the same load-time settings (see `_safe_model_params`).
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from reflectevo.backends import ENGINES
from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.backends.models import ModelRef, fingerprint, resolve
from reflectevo.errors import BackendError
from reflectevo.records import Messages


@ENGINES.register("llamacpp", "llama.cpp via llama-cpp-python: GGUF models on CPU (extra: llamacpp)", local=True)
def _factory(model: str, **options) -> Backend:
    return LlamaCppBackend(resolve(model), **options)


def _safe_model_params() -> None:
    """Load weights without llama.cpp's "extra buffer types" (AMX / CPU repacking).

    On CPUs with AMX (Sapphire Rapids and later), llama.cpp 0.3.36 repacks Q4_1 weights for AMX and
    then crashes (SIGSEGV in llama_decode) on any batch of more than one token, i.e. on every prompt.
    `Llama()` exposes no switch for `use_extra_bufts`, so default it to False at the source. Costs
    nothing measurable for small Q4 models (decode is bound by memory, not by the matmul kernel).
    """
    import llama_cpp
    import llama_cpp.llama

    if getattr(llama_cpp.llama.llama_cpp.llama_model_default_params, "_reflectevo", False):
        return
    original = llama_cpp.llama_model_default_params

    def defaults():
        params = original()
        params.use_extra_bufts = False
        return params

    defaults._reflectevo = True
    llama_cpp.llama.llama_cpp.llama_model_default_params = defaults


class LlamaCppBackend(Backend):
    def __init__(self, ref: ModelRef, instances: int = 2, threads: int = 1, n_ctx: int = 4096,
                 batch_size: int | None = None, prefix_reuse: bool = False, **_ignored):
        try:
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise BackendError("engine 'llamacpp' needs llama-cpp-python: pip install 'reflectevo[llamacpp]'") from exc
        if ref.gguf is None:
            raise BackendError(f"engine 'llamacpp' needs a .gguf file; model {ref.name!r} has none (use --engine hf)")
        if ref.adapter is not None:
            raise BackendError(f"engine 'llamacpp' cannot apply the PEFT adapter {ref.adapter}; merge and convert "
                               "it to GGUF first, or use --engine hf")
        _safe_model_params()
        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        self.batch_size = batch_size or 4 * instances
        self._path = str(ref.gguf)
        self._settings = dict(n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
        try:
            self._llms = [llama_cpp.Llama(self._path, **self._settings) for _ in range(max(1, instances))]
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"cannot load {self._path} with llama.cpp: {exc}") from exc
        self.prefix_reuse = prefix_reuse
        self.batch_invariant = not prefix_reuse  # a clean state per prompt: its text is (prompt, seed) only
        self._idle: queue.Queue = queue.Queue()
        for llm in self._llms:
            self._idle.put(llm)
        self._pool = ThreadPoolExecutor(len(self._llms), thread_name_prefix="llamacpp")
        self._scorer = None  # a logits_all instance, loaded on the first logprob() call
        llm = self._llms[0]
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise BackendError(f"{self._path} has no chat template in its metadata (tokenizer.chat_template)")
        def text(token_id: int) -> str:
            return llm.detokenize([token_id], special=True).decode("utf-8", "replace") if token_id >= 0 else ""

        specials = dict(eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))
        self._formatter = Jinja2ChatFormatter(template, add_generation_prompt=True, **specials)
        self._formatter_no_prompt = Jinja2ChatFormatter(template, add_generation_prompt=False, **specials)

    def render(self, messages: Messages) -> str:
        """The chat template from the GGUF metadata; equals HFBackend.render() (tested)."""
        return self._formatter(messages=list(messages)).prompt

    def _tokens(self, llm, text: str) -> list[int]:
        # The template writes any BOS itself, as with HF's add_special_tokens=False.
        return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _complete(self, messages: Messages, params: SamplingParams) -> list[Completion]:
        llm = self._idle.get()
        try:
            prompt = self._tokens(llm, self.render(messages))
            if not self.prefix_reuse:
                llm.reset()  # a clean state: the text depends only on (prompt, seed, sample index)
            # Greedy decoding gives the same text for every sample: compute it once.
            runs = params.n if params.temperature > 0 else 1
            outs = []
            for index in range(runs):
                out = llm.create_completion(
                    prompt, max_tokens=params.max_tokens, temperature=params.temperature, top_p=params.top_p,
                    top_k=0, min_p=0.0, repeat_penalty=1.0, seed=params.seed + index, stop=list(params.stop))
                choice = out["choices"][0]
                outs.append(Completion(text=choice["text"], tokens=out["usage"]["completion_tokens"],
                                       finish_reason="length" if choice["finish_reason"] == "length" else "stop"))
            return outs * params.n if runs == 1 else outs
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp generation failed ({self._path}): {exc}") from exc
        finally:
            self._idle.put(llm)

    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        return list(self._pool.map(self._complete, prompts, per_prompt(prompts, params)))

    def logprob(self, prompts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        import llama_cpp
        import numpy as np

        if self._scorer is None:
            self._scorer = llama_cpp.Llama(self._path, logits_all=True, **self._settings)
        llm = self._scorer
        scores = []
        for messages, continuation in zip(prompts, continuations):
            prefix = self.render(messages)
            full = self._formatter_no_prompt(
                messages=[*messages, {"role": "assistant", "content": continuation}]).prompt
            if not full.startswith(prefix):
                raise BackendError("chat template does not extend the prompt with the assistant turn")
            # Slice by tokens, not characters: special tokens have no text offsets (docs/backends.md).
            start = len(self._tokens(llm, prefix))
            ids = self._tokens(llm, full)
            llm.reset()
            llm.eval(ids)
            logits = np.asarray(llm.scores[:len(ids)], dtype=np.float64)
            rows = logits[start - 1:len(ids) - 1]
            rows = rows - rows.max(axis=1, keepdims=True)
            logp = rows - np.log(np.exp(rows).sum(axis=1, keepdims=True))
            scores.append(float(logp[np.arange(len(rows)), ids[start:]].sum()))
        return scores

    def describe(self) -> dict:
        return {**super().describe(), "instances": len(self._llms), "threads": self._settings["n_threads"]}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for llm in self._llms:
            llm.close()
        if self._scorer is not None:
            self._scorer.close()
        self._llms = []


def serve() -> None:
    """llama-cpp-python's OpenAI-compatible server, with the same load-time settings as the backend."""
    _safe_model_params()
    from llama_cpp.server.__main__ import main

    main()


if __name__ == "__main__":
    serve()
