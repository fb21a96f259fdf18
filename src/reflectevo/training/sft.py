"""Supervised fine-tuning (settings I and II) with TRL: prompt/completion rows, loss on the completion only."""

from __future__ import annotations

from pathlib import Path

from reflectevo.training.common import lora_config, trainer_args
from reflectevo.training.config import TrainConfig


def build_trainer(cfg: TrainConfig, model, tokenizer, train, validation, stage_dir: Path, callbacks=()):
    """An SFTTrainer whose datasets are already tokenised (TRL does it in the constructor)."""
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(completion_only_loss=True, packing=False,
                     **trainer_args(cfg, "sft", stage_dir, validation is not None))
    return SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                      processing_class=tokenizer, peft_config=None if cfg.full else lora_config(cfg),
                      callbacks=list(callbacks))
