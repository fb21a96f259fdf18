"""One chat-template policy: for every setting, the token ids the trainer trains on are the ids the HF
backend generates from (the prompt, rendered by `HFBackend.render()`), followed by the reply as the
model's own template renders it, and the loss covers exactly the reply.
"""

from __future__ import annotations

import pytest

from reflectevo.errors import ReflectEvoError
from reflectevo.training import TrainConfig, dpo, sft
from reflectevo.training.chat import check_rendering, fits
from reflectevo.training.common import load_model, load_tokenizer, resolve_base
from reflectevo.training.data import load_setting
from training_data import curated_dir  # noqa: F401  (session fixture)

MAX_LENGTH = 4096  # tokenisation only: long enough for any row, the paper's own ~1-2k-token Dpref rows too


def backend_ids(backend, messages):
    """Exactly what HFBackend.generate feeds the model for these messages."""
    return backend.tokenizer(backend.render(messages), add_special_tokens=False).input_ids


def reply_ids(backend, prompt, reply):
    """The assistant turn as the model's own template writes it after the prompt."""
    full = backend.tokenizer.apply_chat_template(prompt + reply, tokenize=False)
    return backend.tokenizer(full, add_special_tokens=False).input_ids[len(backend_ids(backend, prompt)):]


@pytest.fixture(scope="module")
def base():
    cfg = TrainConfig(data=".", setting="I", out=".")
    ref = resolve_base(cfg)
    return ref, load_tokenizer(ref)


@pytest.mark.parametrize("setting", ["I", "II", "III", "IV"])
def test_trainer_sees_the_backend_rendering(setting, curated_dir, default_backend, base, tmp_path):
    ref, tokenizer = base
    cfg = TrainConfig(data=str(curated_dir), setting=setting, out=str(tmp_path), max_length=MAX_LENGTH)
    end_of_turn = default_backend.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for _, data in load_setting(curated_dir, setting):
        rows, _ = fits(tokenizer, data.train, MAX_LENGTH)
        assert rows
        from datasets import Dataset

        build = sft.build_trainer if data.kind == "sft" else dpo.build_trainer
        trainer = build(cfg, load_model(ref), tokenizer, Dataset.from_list(rows), None, tmp_path / data.name)
        for row, seen in zip(rows, trainer.train_dataset):
            prompt = backend_ids(default_backend, row["prompt"])
            if data.kind == "sft":
                reply = reply_ids(default_backend, row["prompt"], row["completion"])
                assert seen["input_ids"] == (prompt + reply)[:MAX_LENGTH]
                # loss on the completion only: every prompt token masked, every reply token trained
                masked = [label == -100 for label in seen["labels"]]
                assert masked == [True] * len(prompt) + [False] * (len(seen["labels"]) - len(prompt))
                assert seen["labels"][len(prompt):] == seen["input_ids"][len(prompt):]
                assert end_of_turn in reply  # the model learns to end its turn as it does at inference
            else:
                assert seen["prompt_ids"] == prompt
                assert seen["chosen_ids"] == reply_ids(default_backend, row["prompt"], row["chosen"])
                assert seen["rejected_ids"] == reply_ids(default_backend, row["prompt"], row["rejected"])
        del trainer


def test_a_template_that_renders_prompts_differently_stops_training(curated_dir, base, tmp_path):
    """The guard run before every training: a template whose generation prompt differs from the trained
    context (here: a stray line before the assistant turn) must stop training with a clear error."""
    from datasets import Dataset

    ref, tokenizer = base
    skewed = load_tokenizer(ref)
    skewed.chat_template = tokenizer.chat_template.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '\n<|im_start|>assistant\n' }}")
    assert skewed.chat_template != tokenizer.chat_template
    cfg = TrainConfig(data=str(curated_dir), setting="III", out=str(tmp_path), max_length=MAX_LENGTH)
    ((_, data),) = load_setting(curated_dir, "III")
    rows, _ = fits(skewed, data.train, MAX_LENGTH)
    trainer = dpo.build_trainer(cfg, load_model(ref), skewed, Dataset.from_list(rows), None, tmp_path)
    with pytest.raises(ReflectEvoError, match="differently from inference"):
        check_rendering(trainer.train_dataset, rows, skewed, MAX_LENGTH)


def _grpo_trainer(cfg, ref, tokenizer, data, tmp_path):
    from datasets import Dataset
    from reflectevo.training import grpo

    rows, _ = fits(tokenizer, data.train, MAX_LENGTH)
    assert rows
    return rows, grpo.build_trainer(cfg, load_model(ref), tokenizer, Dataset.from_list(rows), None, tmp_path,
                                    tasks=data.judges)


def test_setting_V_rollouts_start_from_the_backend_rendering(curated_dir, default_backend, base, tmp_path):
    """GRPO tokenises prompts itself when it samples: those ids are the HF backend's, and its rollouts stop
    on the end-of-turn token, where the backend's replies stop."""
    from reflectevo.training.chat import check_rollout_rendering

    ref, tokenizer = base
    cfg = TrainConfig(data=str(curated_dir), setting="V", out=str(tmp_path), max_length=MAX_LENGTH,
                      num_generations=2, batch_size=1)
    ((_, data),) = load_setting(curated_dir, "V")
    rows, trainer = _grpo_trainer(cfg, ref, tokenizer, data, tmp_path)
    seen, _, _ = trainer._tokenize_prompts([row["prompt"] for row in rows])
    for row, ids in zip(rows, seen):
        assert list(ids) == backend_ids(default_backend, row["prompt"])
    assert default_backend.tokenizer.convert_tokens_to_ids("<|im_end|>") in trainer.eos_token_ids
    assert set(default_backend._eos) <= set(trainer.eos_token_ids)
    assert check_rollout_rendering(trainer, rows, tokenizer, default_backend._eos) == min(8, len(rows))
    # The same skewed template as above stops setting V before any rollout.
    skewed = load_tokenizer(ref)
    skewed.chat_template = tokenizer.chat_template.replace(
        "{{ '<|im_start|>assistant\n' }}", "{{ '\n<|im_start|>assistant\n' }}")
    rows, trainer = _grpo_trainer(cfg, ref, skewed, data, tmp_path)
    with pytest.raises(ReflectEvoError, match="differently from inference"):
        check_rollout_rendering(trainer, rows, tokenizer, default_backend._eos)


def test_rows_longer_than_max_length_are_counted_because_their_replies_lose_the_end(base, tmp_path):
    """The trainer keeps a row's start: a reply past max_length loses its final answer and end-of-turn.
    `cut_replies` counts exactly those rows and names the length that keeps every row whole."""
    from datasets import Dataset
    from reflectevo.training.chat import cut_replies, prompt_ids, reply_ids as template_reply_ids

    ref, tokenizer = base
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    short = {"prompt": prompt, "completion": [{"role": "assistant", "content": "The answer is: 5"}]}
    long = {"prompt": prompt, "completion": [{"role": "assistant", "content": "Let me add. " * 40 + "The answer is: 5"}]}
    lengths = [len(prompt_ids(tokenizer, r["prompt"])) + len(template_reply_ids(tokenizer, r["prompt"], r["completion"]))
               for r in (short, long)]
    limit = lengths[0] + 10
    assert cut_replies(tokenizer, [short, long], limit) == (1, lengths[1])
    assert cut_replies(tokenizer, [short, long], lengths[1]) == (0, lengths[1])
    pair = {"prompt": prompt, "chosen": short["completion"], "rejected": long["completion"]}
    assert cut_replies(tokenizer, [pair], limit) == (1, lengths[1])  # either reply cut counts

    cfg = TrainConfig(data=".", setting="I", out=str(tmp_path), max_length=limit)
    trainer = sft.build_trainer(cfg, load_model(ref), tokenizer, Dataset.from_list([short, long]), None, tmp_path)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    start = len(prompt_ids(tokenizer, prompt))
    replies = [row["input_ids"][start:] for row in trainer.train_dataset]
    assert end_of_turn in replies[0] and end_of_turn not in replies[1] and start + len(replies[1]) == limit
