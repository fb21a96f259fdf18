"""Hugging Face transformers backend: true batching across prompts with left padding (CPU or GPU)."""

from __future__ import annotations

from typing import Sequence

from reflectevo.backends.base import Backend, Completion, SamplingParams
from reflectevo.backends.models import ModelRef, fingerprint, hf_folder
from reflectevo.errors import BackendError
from reflectevo.records import Messages


class HFBackend(Backend):
    def __init__(self, ref: ModelRef, device: str | None = None, dtype: str = "auto", batch_size: int = 16):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bars tell the user what is happening
        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # bf16 is ~6x faster than fp32 for generation on this kind of CPU (RUNTIME.md); scoring
        # log-probabilities should use dtype="float32" (bf16 drifts by up to ~0.4 nats per sequence).
        torch_dtype = torch.bfloat16 if dtype == "auto" else getattr(torch, dtype)
        folder = hf_folder(ref)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
            if ref.adapter is not None:
                from peft import PeftModel

                model = PeftModel.from_pretrained(model, ref.adapter)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot load model {ref.name!r} from {folder}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval()
        self._eos = self._eos_ids()

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
        ids.add(self.tokenizer.eos_token_id)
        # Chat models end a turn with their end-of-turn token, which is not always the eos token.
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self.tokenizer.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    @property
    def cache_identity(self) -> str:
        return f"HFBackend:{self.model.dtype}:{self.fingerprint}"

    def render(self, messages: Messages) -> str:
        """The model's own chat template, the one policy used by generation, training and evaluation."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[list[Completion]]:
        import torch

        texts = [self.render(m) for m in prompts]
        batch = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = params.temperature > 0
        kwargs = dict(max_new_tokens=params.max_tokens, do_sample=sampling, num_return_sequences=params.n,
                      eos_token_id=self._eos, pad_token_id=self.tokenizer.pad_token_id)
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        torch.manual_seed(params.seed)
        try:
            with torch.inference_mode():
                output = self.model.generate(**batch, **kwargs)
        except RuntimeError as exc:
            raise BackendError(f"generation failed on {self.device}: {exc}") from exc
        new_tokens = output[:, batch["input_ids"].shape[1]:]
        results: list[list[Completion]] = [[] for _ in prompts]
        for row, tokens in enumerate(new_tokens):
            ids = tokens.tolist()
            finished = next((i for i, t in enumerate(ids) if t in self._eos), None)
            kept = ids[:finished] if finished is not None else ids
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            reason = "stop" if finished is not None else "length"
            for stop in params.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
            results[row // params.n].append(Completion(text=text, tokens=len(kept), finish_reason=reason))
        return results

    def logprob(self, prompts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        import torch

        scores = []
        for messages, continuation in zip(prompts, continuations):
            prefix = self.render(messages)
            full = self.tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": continuation}], tokenize=False)
            if not full.startswith(prefix):
                raise BackendError("chat template does not extend the prompt with the assistant turn")
            prefix_ids = self.tokenizer(prefix, add_special_tokens=False, return_tensors="pt").input_ids
            full_ids = self.tokenizer(full, add_special_tokens=False, return_tensors="pt").input_ids
            # Score exactly the tokens after the prompt (the reply and its end-of-turn token).
            with torch.inference_mode():
                logits = self.model(full_ids.to(self.device)).logits.float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1)
            targets = full_ids[0, 1:].to(self.device)
            start = prefix_ids.shape[1] - 1
            token_lp = logp[torch.arange(start, targets.shape[0]), targets[start:]]
            scores.append(float(token_lp.sum()))
        return scores

    def close(self) -> None:
        del self.model
