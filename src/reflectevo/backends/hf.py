"""Hugging Face transformers backend: true batching across prompts with left padding (CPU or GPU).

Batch invariance: a request's text depends on its prompt and seed only, never on the other requests of
its batch, so the generation cache can send the engine exactly the samples that are missing and a
resumed run still equals an uninterrupted one. Two things make it so:
- every batch has the same shape for a given prompt: rows are grouped by their prompt length rounded
  up to a multiple of `bucket` tokens, left-padded to exactly that length, and each batch is filled to
  `batch_size` rows (copies of its first row, whose output is dropped). Left padding to a batch-wide
  length, as before, moved 3 of 200 greedy answers on `add` (bf16 matmuls round differently when the
  padding and the batch shape change);
- sampling draws each row's token with that row's own torch.Generator, seeded with the request's seed
  (`SeededSampler`), instead of one global random stream shared by the batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import Sequence

from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.backends.models import ModelRef, fingerprint, hf_folder
from reflectevo.errors import BackendError
from reflectevo.records import Messages
from reflectevo.runs import cpu_has_bf16


class SeededSampler:
    """A logits processor that picks every row's next token itself: greedy where the row's temperature is
    0, else temperature + top-p sampling with the row's own generator. It returns scores that are -inf
    except at the chosen token, so `generate` (run greedy) takes exactly that token."""

    def __init__(self, params: Sequence[SamplingParams], device):
        import torch

        self.temperature = torch.tensor([p.temperature for p in params], dtype=torch.float32, device=device)
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32, device=device)
        self.generators = [torch.Generator(device=device).manual_seed(p.seed) if p.temperature > 0 else None
                           for p in params]

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        chosen = scores.argmax(dim=-1)
        sampled = [row for row, g in enumerate(self.generators) if g is not None]
        if sampled:
            rows = torch.tensor(sampled, device=scores.device)
            logits = scores[rows] / self.temperature[rows, None]
            probs = torch.softmax(logits, dim=-1)
            top_p = self.top_p[rows]
            if bool((top_p < 1).any()):  # nucleus: keep the smallest prefix of sorted tokens reaching top_p
                ordered, order = probs.sort(dim=-1, descending=True)
                outside = ordered.cumsum(dim=-1) - ordered > top_p[:, None]
                probs = probs.scatter(-1, order, ordered.masked_fill(outside, 0.0))
            for i, row in enumerate(sampled):
                chosen[row] = torch.multinomial(probs[i], 1, generator=self.generators[row])[0]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return out


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """The token ids that end a reply: the model's eos ids, the tokenizer's, and the end-of-turn token.

    Chat models end a turn with their end-of-turn token, which is not always the eos token. Training that
    generates (GRPO) stops on the same ids, so its rollouts end where inference replies end.
    """
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    ids.add(tokenizer.eos_token_id)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)


class HFBackend(Backend):
    batch_invariant = True  # see the module docstring; measured in tests/test_cache.py

    def __init__(self, ref: ModelRef, device: str | None = None, dtype: str = "auto", batch_size: int = 16,
                 bucket: int = 64):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # our own progress bars tell the user what is happening
        self.name = ref.name
        self.fingerprint = fingerprint(ref)
        self.batch_size = batch_size
        self.bucket = bucket
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        # bf16 is ~6x faster than fp32 for generation on a CPU with native bf16 (docs/backends.md), and
        # ~95x slower on one without (a 64x576x1536 matmul on an AVX2-only EPYC: 92 ms against 1 ms), so
        # "auto" takes bf16 only where the CPU has it. Scoring log-probabilities should use
        # dtype="float32" (bf16 drifts by up to ~0.4 nats per sequence).
        if dtype == "auto":
            torch_dtype = torch.bfloat16 if self.device != "cpu" or cpu_has_bf16() else torch.float32
        else:
            torch_dtype = getattr(torch, dtype)
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
        return end_of_turn_ids(self.model, self.tokenizer)

    @property
    def cache_identity(self) -> str:
        return f"HFBackend:{self.model.dtype}:{self.fingerprint}"

    def render(self, messages: Messages) -> str:
        """The model's own chat template, the one policy used by generation, training and evaluation."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        # One row per sample; rows that share everything but the seed and have prompts of one length
        # bucket run together, in batches of exactly batch_size rows (see the module docstring).
        rows = [(index, self.tokenizer(self.render(m), add_special_tokens=False).input_ids, p.sample(i))
                for index, (m, p) in enumerate(zip(prompts, per_prompt(prompts, params))) for i in range(p.n)]
        groups: dict[tuple, list] = defaultdict(list)
        for row in rows:
            ids, p = row[1], row[2]
            length = -(-len(ids) // self.bucket) * self.bucket
            groups[(length, replace(p, seed=0))].append(row)
        results: dict[int, list[Completion]] = defaultdict(list)
        for (length, _), members in sorted(groups.items(), key=lambda item: item[0][0]):
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                for (index, _, _), completion in zip(batch, self._run(batch, length)):
                    results[index].append(completion)
        return [results[i] for i in range(len(prompts))]

    def _run(self, batch: list, length: int) -> list[Completion]:
        """Generate one completion per row: rows left-padded to `length`, filled up to batch_size rows."""
        import torch
        from transformers import LogitsProcessorList

        filled = batch + [batch[0]] * (self.batch_size - len(batch))
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (length - len(ids)) + ids for _, ids, _ in filled], device=self.device)
        mask = torch.tensor([[0] * (length - len(ids)) + [1] * len(ids) for _, ids, _ in filled], device=self.device)
        params = batch[0][2]
        kwargs = dict(max_new_tokens=params.max_tokens, do_sample=False, eos_token_id=self._eos, pad_token_id=pad,
                      temperature=None, top_p=None, top_k=None,
                      logits_processor=LogitsProcessorList([SeededSampler([p for _, _, p in filled], self.device)]))
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        try:
            with torch.inference_mode():
                output = self.model.generate(input_ids=input_ids, attention_mask=mask, **kwargs)
        except RuntimeError as exc:
            raise BackendError(f"generation failed on {self.device}: {exc}") from exc
        completions = []
        for tokens in output[: len(batch), length:]:
            ids = tokens.tolist()
            finished = next((i for i, t in enumerate(ids) if t in self._eos), None)
            kept = ids[:finished] if finished is not None else ids
            text = self.tokenizer.decode(kept, skip_special_tokens=True)
            reason = "stop" if finished is not None else "length"
            for stop in params.stop:
                cut = text.find(stop)
                if cut >= 0:
                    text, reason = text[:cut], "stop"
            completions.append(Completion(text=text, tokens=len(kept), finish_reason=reason))
        return completions

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
