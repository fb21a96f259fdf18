"""One chat-template policy: training sees a row exactly as the backends render it at inference.

TRL renders conversational rows with the tokenizer's own chat template: the prompt with the generation
prompt (as `HFBackend.render()` does), then prompt + reply, whose extra tokens are the completion.
`check_rendering` verifies this on the trainer's own tokenised rows before any step is taken, so a
template that renders a prompt differently in the two cases stops training instead of silently
training on a context the model never sees at inference (the paper's code hard-coded Llama-3 tokens).
"""

from __future__ import annotations

from reflectevo.errors import ReflectEvoError
from reflectevo.records import Messages


def render(tokenizer, messages: Messages) -> str:
    """The inference rendering: identical to `HFBackend.render()`."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def prompt_ids(tokenizer, messages: Messages) -> list[int]:
    """The token ids a backend generates from (the HF backend tokenises without extra special tokens)."""
    return tokenizer(render(tokenizer, messages), add_special_tokens=False).input_ids


def reply_ids(tokenizer, prompt: Messages, reply: Messages) -> list[int]:
    """The reply as the model's own template renders it after the prompt (text, end-of-turn, ...)."""
    full = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    head = render(tokenizer, prompt)
    if not full.startswith(head):
        raise ReflectEvoError("the chat template does not render prompt + reply as the prompt followed by the "
                              "reply; this model's template cannot be trained on prompt/completion rows")
    return tokenizer(full, add_special_tokens=False).input_ids[len(prompt_ids(tokenizer, prompt)):]


def fits(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], int]:
    """Rows whose prompt leaves room for at least a few reply tokens, and how many were dropped.

    A longer prompt would be truncated to nothing but prompt: no loss, no learning signal.
    """
    kept = [row for row in rows if len(prompt_ids(tokenizer, row["prompt"])) <= max_length - 8]
    return kept, len(rows) - len(kept)


def cut_replies(tokenizer, rows: list[dict], max_length: int) -> tuple[int, int]:
    """How many rows are longer than max_length, and the longest row's length in tokens.

    The trainer keeps a row's start, so a longer row loses the end of its reply: the final answer and the
    end-of-turn token. It then teaches answers that never finish (for Qwen2.5-Coder-1.5B on GSM8K, 10 of
    36 setting-I rows at max_length 1024; docs/evidence.md). DPO rows count when either reply is cut.
    """
    longest, cut = 0, 0
    for row in rows:
        prompt = len(prompt_ids(tokenizer, row["prompt"]))
        replies = [row[k] for k in ("completion", "chosen", "rejected") if k in row]
        length = prompt + max((len(reply_ids(tokenizer, row["prompt"], r)) for r in replies), default=0)
        longest, cut = max(longest, length), cut + (length > max_length)
    return cut, longest


def _mismatch(kind: str, where: int, got: list[int], want: list[int], tokenizer) -> ReflectEvoError:
    return ReflectEvoError(
        f"training would render row {where} differently from inference ({kind}): trainer sees "
        f"{tokenizer.decode(got)[-120:]!r}, the backend renders {tokenizer.decode(want)[-120:]!r}")


def check_rollout_rendering(trainer, rows: list[dict], tokenizer, end_ids: list[int], sample: int = 8) -> int:
    """GRPO (setting V): the trainer tokenises prompts itself when it samples, so compare the ids it
    generates from with the backend's, and check that its rollouts end on the backends' end-of-turn ids
    (a rollout that ran past them would train on text no inference reply contains)."""
    checked = min(sample, len(rows))
    # The trainer's own tokenisation of a batch of prompts (what its generate call is fed).
    seen, _, _ = trainer._tokenize_prompts([row["prompt"] for row in rows[:checked]])
    for i in range(checked):
        want = prompt_ids(tokenizer, rows[i]["prompt"])
        if list(seen[i]) != want:
            raise _mismatch("prompt", i, list(seen[i]), want, tokenizer)
    missing = set(end_ids) - set(trainer.eos_token_ids)
    if missing:
        raise ReflectEvoError(f"rollouts would not stop at end-of-turn token(s) {sorted(missing)}, where "
                              f"inference replies stop")
    return checked


def check_rendering(train_dataset, rows: list[dict], tokenizer, max_length: int, sample: int = 8) -> int:
    """Compare the trainer's tokenised rows with the inference rendering; return rows checked."""
    checked = min(sample, len(rows))
    for i in range(checked):
        row, seen = rows[i], train_dataset[i]
        want_prompt = prompt_ids(tokenizer, row["prompt"])
        if "prompt_ids" in seen:  # DPO: prompt, chosen and rejected are kept apart
            if seen["prompt_ids"] != want_prompt:
                raise _mismatch("prompt", i, seen["prompt_ids"], want_prompt, tokenizer)
            for column in ("chosen", "rejected"):
                want = reply_ids(tokenizer, row["prompt"], row[column])
                if seen[f"{column}_ids"] != want:
                    raise _mismatch(column, i, seen[f"{column}_ids"], want, tokenizer)
        else:  # SFT: one sequence, the prompt masked out of the loss
            labels = seen["labels"]
            start = next((j for j, label in enumerate(labels) if label != -100), len(labels))
            want = (want_prompt + reply_ids(tokenizer, row["prompt"], row["completion"]))[:max_length]
            if seen["input_ids"][:start] != want_prompt[:start] or start != min(len(want_prompt), max_length):
                raise _mismatch("prompt", i, seen["input_ids"][:start], want_prompt, tokenizer)
            if seen["input_ids"] != want:
                raise _mismatch("completion", i, seen["input_ids"], want, tokenizer)
    return checked
