"""Reflection-learning settings: which of the paper's four settings (and V, online RL), on which data, with
which hyper-parameters.

Defaults follow the paper where it states them (LoRA r=8, alpha=32; DPO beta=0.01) and TRL's usual
choices elsewhere. `TrainConfig` is one section (`train:`) of a run YAML file, like every stage config.
What a setting is (its datasets, trainers, evaluation mode and roles) is one declaration in SETTINGS here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.config import StageConfig
from reflectevo.registry import Registry


@dataclass(frozen=True)
class Stage:
    """One model a setting trains: its output sub-folder, curated dataset, trainer, and the role it plays."""

    name: str  # sub-folder of the training output; "model" where a setting trains one model (no sub-folder)
    dataset: str  # curated dataset (stages/curate.py)
    trainer: Literal["sft", "dpo", "grpo"]
    #: where a setting trains several models: the evaluation role this one plays, said in a model card
    role: Literal["generator", "reflector"] | None = None
    role_text: str = ""


@dataclass(frozen=True)
class TrainingSetting:
    """What a setting is, declared once: what it trains on and how its models are evaluated. train,
    evaluate and evolve read this; none of them tests a setting's name."""

    stages: tuple[Stage, ...]
    #: one-stage: one reply holds reflection and corrected answer; two-stage: a reflection, then a correction
    evaluation: Literal["one-stage", "two-stage"]

    def stage_dirs(self, out: Path) -> list[Path]:
        return [out / stage.name if len(self.stages) > 1 else out for stage in self.stages]

    def models(self, out: Path) -> dict[str, str]:
        """The trained models by role (generator, reflector): one model plays both unless stages say otherwise."""
        dirs = {stage.role: folder for stage, folder in zip(self.stages, self.stage_dirs(out))}
        generator = dirs.get("generator", self.stage_dirs(out)[-1])
        return {"generator": str(generator / "model"), "reflector": str(dirs.get("reflector", generator) / "model")}


#: training settings by name (each one's stages train in the order given); a plugin adds its own through
#: the `reflectevo.settings` entry-point group (docs/architecture.md)
SETTINGS: Registry[TrainingSetting] = Registry("training setting", "reflectevo.training", "reflectevo.settings",
                                               modules=())


def add_setting(name: str, description: str, evaluation: str, *stages: Stage) -> TrainingSetting:
    return SETTINGS.add(name, description, TrainingSetting(stages, evaluation))


add_setting("I", "one-stage SFT on D+: (question, failed trial 1, feedback) -> reflection + corrected answer",
            "one-stage", Stage("model", "sft_one_stage", "sft"))
add_setting("II", "two-stage SFT on D+: stage 1 (question, failed trial 1, feedback) -> reflection; "
                  "stage 2 (question, failed trial 1, reflection) -> corrected answer",
            "two-stage", Stage("stage1", "sft_reflect", "sft", "reflector", "the reflector (writes reflections)"),
            Stage("stage2", "sft_correct", "sft", "generator", "the corrector (answers again)"))
add_setting("III", "DPO on D+-: a reflection that led to a correct trial 2 over one that did not",
            "two-stage", Stage("model", "dpo_contrastive", "dpo"))
add_setting("IV", "DPO on Dpref: the judge-preferred of two reflections that both led to a correct trial 2",
            "two-stage", Stage("model", "dpo_preference", "dpo"))
add_setting("V", "online RL (GRPO) on the trial-2 reward: the policy answers setting I's prompt (question, "
                 "failed trial 1, feedback) with a reflection + corrected answer, rewarded by the task's verifier",
            "one-stage", Stage("model", "rl_prompts", "grpo"))
add_setting("control", "the self-training control: SFT on the model's own right trial-1 answers, as many rows as "
                       "setting I's, no reflection (a gain of I that this matches is not reflection's)",
            "one-stage", Stage("model", "sft_self_train", "sft"))


def _known_setting(name: str) -> str:
    if name not in SETTINGS:
        raise ValueError(str(SETTINGS.unknown(name)))
    return name


#: a config field naming a training setting (validated against SETTINGS, plugins included)
Setting = Annotated[str, AfterValidator(_known_setting)]

#: TrainConfig fields that only setting V (GRPO) reads (model cards of other settings leave them out)
GRPO_FIELDS = ("num_generations", "max_completion_length", "temperature", "top_p", "kl_beta", "grpo_loss_type",
               "format_reward", "answer_penalty", "reward_workers", "reward_task", "use_vllm", "vllm_mode",
               "vllm_server_base_url", "vllm_gpu_memory_utilization", "vllm_tensor_parallel_size", "grpo_args")


class TrainConfig(StageConfig):
    """One `reflectevo train` run. `out` holds one folder per trained model (setting II: stage1/, stage2/)."""

    data: str = Field(description="curated folder (from `reflectevo curate`), or one dataset sub-folder")
    setting: Setting = Field(description="training setting (`reflectevo settings` lists them): I, II, III, IV, "
                                         "V, control")
    out: str = Field(description="output folder (one folder per trained model: setting II writes OUT/stage1, "
                                 "OUT/stage2)")
    model: str = Field(DEFAULT_MODEL, description="model to train: preset or model folder")
    full: bool = Field(False, description="full fine-tuning instead of LoRA")
    # LoRA (paper: r=8, alpha=32)
    lora_r: int = Field(8, ge=1, description="LoRA rank (paper: 8)")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha (paper: 32)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_target_modules: str | list[str] = Field("all-linear", description="LoRA target modules (PEFT)")
    # DPO (paper: beta=0.01)
    beta: float = Field(0.01, gt=0, description="DPO beta (paper: 0.01)")
    loss_type: str = Field("sigmoid", description="TRL DPO loss (sigmoid = the DPO paper's loss)")
    # GRPO (setting V): rollouts, reward and KL; see docs/training.md
    num_generations: int = Field(4, ge=2, description="GRPO: completions sampled per prompt (one group)")
    max_completion_length: int = Field(256, ge=1, description="GRPO: max new tokens per completion")
    temperature: float = Field(0.8, gt=0, description="GRPO: sampling temperature of the rollouts (paper's "
                                                      "reflection sampling: 0.8)")
    top_p: float = Field(1.0, gt=0, le=1, description="GRPO: nucleus sampling of the rollouts")
    kl_beta: float = Field(0.0, ge=0, description="GRPO: KL coefficient to the starting model (0: no reference "
                                                  "pass, TRL's default)")
    grpo_loss_type: str = Field("dapo", description="GRPO: TRL loss_type (dapo, grpo, dr_grpo, bnpo, ...)")
    format_reward: float = Field(0.0, ge=0, description="GRPO shaped term, off by default: + this when the reply "
                                                        "ended by itself with a reflection before a readable answer")
    answer_penalty: float = Field(0.0, ge=0, description="GRPO shaped term, off by default: - this when the "
                                                         "reflection part already states an answer")
    reward_workers: int = Field(4, ge=1, description="GRPO: concurrent verifier calls for code tasks (sandbox)")
    reward_task: str | None = Field(None, description="GRPO: task name or .yaml whose verifier judges every row "
                                                      "(default: each row's own task)")
    use_vllm: bool = Field(False, description="GRPO on GPUs: generate rollouts with vLLM (TRL use_vllm)")
    vllm_mode: Literal["colocate", "server"] = Field("colocate", description="GRPO + vLLM: inside the trainer "
                                                                             "(TRL's default), or a `trl vllm-serve` "
                                                                             "server on other GPUs")
    vllm_server_base_url: str | None = Field(None, description="GRPO + vLLM server: e.g. http://HOST:8000")
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="GRPO + vLLM colocate: GPU share")
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GRPO + vLLM colocate: tensor-parallel GPUs")
    grpo_args: dict[str, Any] = Field(default_factory=dict, description="GRPO: any other GRPOConfig keyword "
                                                                        "(e.g. scale_rewards, num_iterations)")
    # optimisation
    learning_rate: float | None = Field(None, gt=0, description="default: 1e-4 LoRA, 1e-5 full; DPO /10")
    epochs: float = Field(3.0, gt=0, description="training epochs")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: run the epochs)")
    batch_size: int = Field(4, ge=1, description="rows per device per step (GRPO: prompts, each sampled "
                                                 "num_generations times)")
    grad_accum: int = Field(1, ge=1, description="gradient accumulation steps")
    max_length: int = Field(1024, ge=16, description="tokens per row (prompt + completion)")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="share of steps warming the learning rate up")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    lr_scheduler: str = Field("linear", description="transformers learning-rate schedule")
    data_order: Literal["random", "sequential"] = Field(
        "random", description="order of training rows (sequential: the file's order, e.g. to compare launches)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where supported (CPU and recent GPUs), else fp32")
    gradient_checkpointing: bool = Field(False, description="trade compute for activation memory")
    # logging, evaluation, checkpoints
    logging_steps: int = Field(10, ge=1, description="log (metrics.jsonl) every N steps")
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (default: at the end)")
    save_steps: int = Field(200, ge=1, description="checkpoint every N steps")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept")
    resume: bool = Field(False, description="continue from the last checkpoint in `out`")
    allow_test_split: bool = Field(False, description="train on rows from a test split (contaminates every "
                                                      "later evaluation on it)")
    merge: bool = Field(True, description="LoRA: also write the merged model folder")
    seed: int = Field(0, description="seed of initialisation, data order and sampling")

    @property
    def spec(self) -> TrainingSetting:
        return SETTINGS.get(self.setting).obj

    @property
    def method(self) -> str:
        return "full" if self.full else "lora"

    def lr(self, kind: str) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        base = 1e-5 if self.full else 1e-4
        return base / 10 if kind == "dpo" else base
