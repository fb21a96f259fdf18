"""Online RL on the trial-2 reward (setting V) with TRL's GRPOTrainer.

Each step samples `num_generations` replies to each of `batch_size` prompts (setting I's prompt: the
question, the failed trial 1 and the feedback), judges every reply with the task's verifier
(training/rewards.py) and moves the policy towards the replies of its group that scored above the
group's mean. With LoRA and kl_beta > 0 the reference is the base with the adapter switched off.
"""

from __future__ import annotations

from pathlib import Path

from reflectevo.backends.hf import end_of_turn_ids
from reflectevo.training.common import lora_config, trainer_args
from reflectevo.training.config import TrainConfig
from reflectevo.training.rewards import Judge, reward_functions


def grpo_args(cfg: TrainConfig, stage_dir: Path, has_eval: bool) -> dict:
    args = trainer_args(cfg, "grpo", stage_dir, has_eval)
    args.pop("max_length")  # GRPO bounds the completion (max_completion_length); prompts are kept whole
    # TRL counts completions, not prompts. One step samples batch_size prompts x num_generations replies at
    # once (steps_per_generation defaults to the accumulation steps), then trains on them one group per
    # forward pass, accumulating the gradient: a forward pass over all 16 replies of the default batch
    # peaked at 16.5 GB on CPU (fp32), one group at a time needs about a quarter of that.
    # Evaluation keeps no activations for a backward pass: it samples and scores the whole batch at once.
    args.update(per_device_train_batch_size=cfg.num_generations,
                per_device_eval_batch_size=cfg.batch_size * cfg.num_generations,
                gradient_accumulation_steps=cfg.batch_size * cfg.grad_accum, num_generations=cfg.num_generations,
                max_completion_length=cfg.max_completion_length,
                temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.kl_beta, loss_type=cfg.grpo_loss_type,
                reward_weights=[1.0, cfg.format_reward, -cfg.answer_penalty],
                use_vllm=cfg.use_vllm, log_completions=False)
    if cfg.use_vllm:
        args.update(vllm_mode=cfg.vllm_mode, vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                    vllm_tensor_parallel_size=cfg.vllm_tensor_parallel_size)
        if cfg.vllm_server_base_url:
            args["vllm_server_base_url"] = cfg.vllm_server_base_url
    args.update(cfg.grpo_args)
    return args


def build_trainer(cfg: TrainConfig, model, tokenizer, train, validation, stage_dir: Path, callbacks=(),
                  tasks: dict | None = None):
    """A GRPOTrainer whose rollouts stop where inference replies stop; `tasks` maps row task names to Tasks."""
    from trl import GRPOConfig, GRPOTrainer

    # TRL ends a completion at the model's eos ids: make them the backends' end-of-turn ids.
    model.generation_config.eos_token_id = end_of_turn_ids(model, tokenizer)
    judge = Judge(tasks or {}, model.generation_config.eos_token_id, cfg.reward_workers)
    args = GRPOConfig(**grpo_args(cfg, stage_dir, validation is not None))
    return GRPOTrainer(model=model, reward_funcs=reward_functions(judge), args=args, train_dataset=train,
                       eval_dataset=validation, processing_class=tokenizer,
                       peft_config=None if cfg.full else lora_config(cfg), callbacks=list(callbacks))
