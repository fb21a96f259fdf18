"""Reflection-learning settings: which of the paper's four settings, on which data, with which hyper-parameters.

Defaults follow the paper where it states them (LoRA r=8, alpha=32; DPO beta=0.01) and TRL's usual
choices elsewhere. `TrainConfig` is one section (`train:`) of a run YAML file, like every stage config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.config import StageConfig

Setting = Literal["I", "II", "III", "IV", "control"]

#: what each setting trains: (stage name, curated sub-folder, trainer kind), in training order
STAGES: dict[str, list[tuple[str, str, str]]] = {
    "I": [("model", "sft_one_stage", "sft")],
    "II": [("stage1", "sft_reflect", "sft"), ("stage2", "sft_correct", "sft")],
    "III": [("model", "dpo_contrastive", "dpo")],
    "IV": [("model", "dpo_preference", "dpo")],
    "control": [("model", "sft_self_train", "sft")],
}

DESCRIPTIONS = {
    "I": "one-stage SFT on D+: (question, failed trial 1, feedback) -> reflection + corrected answer",
    "II": "two-stage SFT on D+: stage 1 (question, failed trial 1, feedback) -> reflection; "
          "stage 2 (question, failed trial 1, reflection) -> corrected answer",
    "III": "DPO on D+-: a reflection that led to a correct trial 2 over one that did not",
    "IV": "DPO on Dpref: the judge-preferred of two reflections that both led to a correct trial 2",
    "control": "the self-training control: SFT on the model's own right trial-1 answers, as many rows as "
               "setting I's, no reflection (a gain of I that this matches is not reflection's)",
}
STAGE_ROLES = {"stage1": "the reflector (writes reflections)", "stage2": "the corrector (answers again)"}


class TrainConfig(StageConfig):
    """One `reflectevo train` run. `out` holds one folder per trained model (setting II: stage1/, stage2/)."""

    data: str = Field(description="curated folder (from `reflectevo curate`), or one dataset sub-folder")
    setting: Setting
    out: str
    model: str = DEFAULT_MODEL
    full: bool = Field(False, description="full fine-tuning instead of LoRA")
    # LoRA (paper: r=8, alpha=32)
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str | list[str] = "all-linear"
    # DPO (paper: beta=0.01)
    beta: float = Field(0.01, gt=0)
    loss_type: str = Field("sigmoid", description="TRL DPO loss (sigmoid = the DPO paper's loss)")
    # optimisation
    learning_rate: float | None = Field(None, gt=0, description="default: 1e-4 LoRA, 1e-5 full; DPO /10")
    epochs: float = Field(3.0, gt=0)
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: run the epochs)")
    batch_size: int = Field(4, ge=1, description="rows per device per step")
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16, description="tokens per row (prompt + completion)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "linear"
    data_order: Literal["random", "sequential"] = Field(
        "random", description="order of training rows (sequential: the file's order, e.g. to compare launches)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where supported (CPU and recent GPUs), else fp32")
    gradient_checkpointing: bool = False
    # logging, evaluation, checkpoints
    logging_steps: int = Field(10, ge=1)
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (default: at the end)")
    save_steps: int = Field(200, ge=1)
    save_total_limit: int = Field(2, ge=1)
    resume: bool = Field(False, description="continue from the last checkpoint in `out`")
    allow_test_split: bool = Field(False, description="train on rows from a test split (contaminates every "
                                                      "later evaluation on it)")
    merge: bool = Field(True, description="LoRA: also write the merged model folder")
    seed: int = 0

    @property
    def method(self) -> str:
        return "full" if self.full else "lora"

    def lr(self, kind: str) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        base = 1e-5 if self.full else 1e-4
        return base / 10 if kind == "dpo" else base
