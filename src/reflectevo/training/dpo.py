"""Direct preference optimisation over reflections (settings III on D+-, IV on Dpref) with TRL.

With LoRA the reference model is the base with the adapter switched off (no second copy in memory);
with full fine-tuning TRL keeps a frozen copy of the starting model as the reference.
"""

from __future__ import annotations

from pathlib import Path

from reflectevo.training.common import lora_config, trainer_args
from reflectevo.training.config import TrainConfig


def build_trainer(cfg: TrainConfig, model, tokenizer, train, validation, stage_dir: Path, callbacks=()):
    """A DPOTrainer whose datasets are already tokenised (TRL does it in the constructor)."""
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(beta=cfg.beta, loss_type=[cfg.loss_type],
                     **trainer_args(cfg, "dpo", stage_dir, validation is not None))
    return DPOTrainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                      processing_class=tokenizer, peft_config=None if cfg.full else lora_config(cfg),
                      callbacks=list(callbacks))
