"""What SFT and DPO share: the base model and its tokenizer, LoRA, precision and the Trainer arguments."""

from __future__ import annotations

import os
from pathlib import Path

from reflectevo.backends.models import PRESETS, ModelRef, hf_folder, resolve
from reflectevo.errors import BackendError, InputError
from reflectevo.runs import cpu_has_bf16
from reflectevo.training.config import TrainConfig


def is_main_process() -> bool:
    """Rank 0 of an accelerate/torchrun launch (or a plain single process) writes the run's files."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_base(cfg: TrainConfig) -> ModelRef:
    """The model to start from; an unknown model fails here, before anything loads."""
    ref = resolve(cfg.model)
    if ref.adapter is not None and not cfg.full:
        raise InputError(f"model {cfg.model!r} is a LoRA adapter: a new adapter cannot stack on it; train from "
                         f"its merged model folder (the `model/` beside it) or pass --full")
    return ref


def base_name(cfg: TrainConfig) -> str:
    """How an adapter names its base: the preset name (portable), else the absolute folder path."""
    return cfg.model if cfg.model in PRESETS else str(Path(cfg.model).expanduser().resolve())


def load_tokenizer(ref: ModelRef):
    """The tokenizer the HF backend uses: same folder, same chat template (one policy for all stages)."""
    from transformers import AutoTokenizer

    folder = hf_folder(ref)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise InputError(f"model {ref.name!r} has no chat template; reflection learning needs a chat model")
    return tokenizer


def load_model(ref: ModelRef):
    """fp32 weights (mixed precision is the Trainer's job); an adapter given as the base is merged first."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = hf_folder(ref)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        if ref.adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, ref.adapter).merge_and_unload()
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load model {ref.name!r} from {folder}: {exc}") from exc
    return model


def lora_config(cfg: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


def precision(cfg: TrainConfig) -> dict:
    """Trainer flags. On CPU, bf16 autocast needs `use_cpu=True` and trains ~1.8x faster (docs/training.md)."""
    import torch

    cuda = torch.cuda.is_available()
    choice = cfg.precision
    if choice == "auto":
        # bf16 autocast only where the hardware computes bf16: emulated on an AVX2-only CPU it is ~95x
        # slower than fp32 (docs/training.md).
        choice = "bf16" if (torch.cuda.is_bf16_supported() if cuda else cpu_has_bf16()) else "fp32"
    if choice == "fp16" and not cuda:
        raise InputError("precision 'fp16' needs a CUDA GPU; use bf16 or fp32 on CPU")
    return {"bf16": choice == "bf16", "fp16": choice == "fp16", "use_cpu": not cuda}


def trainer_args(cfg: TrainConfig, kind: str, stage_dir: Path, has_eval: bool) -> dict:
    """Keyword arguments common to SFTConfig and DPOConfig."""
    eval_every = {"eval_strategy": "steps", "eval_steps": cfg.eval_steps} if has_eval and cfg.eval_steps \
        else {"eval_strategy": "no"}
    return dict(
        output_dir=str(stage_dir / "checkpoints"), learning_rate=cfg.lr(kind), num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, lr_scheduler_type=cfg.lr_scheduler,
        train_sampling_strategy=cfg.data_order,
        logging_steps=cfg.logging_steps,
        logging_first_step=True, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit, seed=cfg.seed, report_to="none", disable_tqdm=True,
        max_length=cfg.max_length, **eval_every, **precision(cfg),
        # explicit either way: TRL's configs default to checkpointing on, which costs ~30% speed
        **{_checkpointing_flag(): cfg.gradient_checkpointing})


def _checkpointing_flag() -> str:
    """transformers 5.x renamed gradient_checkpointing to activation_checkpointing (the old name warns)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
