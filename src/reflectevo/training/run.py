"""The training stage: validate data -> for each model of the setting: train (or resume) -> save -> card.

Layout of OUT (setting II has one such folder per stage, OUT/stage1 and OUT/stage2):
    adapter/          LoRA adapter (adapter_config.json names a base that `models.resolve` finds)
    model/            full HF model folder (LoRA merged in): load it with any backend by path
    checkpoints/      Trainer checkpoints (resume with --resume) and trainer_state.json
    metrics.jsonl     every logged value: loss, eval_loss, DPO rewards/margins and accuracies, GRPO reward, ...,
                      and peak memory since training began (peak_memory_gib)
    loss.png          the loss curve (and DPO reward margins)
    rewards.png       setting V: reward per step (mean +- std over the step's rollouts, and per reward term)
    final_metrics.json, README.md (the model card)
"""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext
from pathlib import Path

from reflectevo.backends.hf import end_of_turn_ids
from reflectevo.errors import InputError
from reflectevo.progress import console
from reflectevo.runs import RunDir, write_json
from reflectevo.training import chat, dpo, grpo, sft
from reflectevo.training.common import base_name, is_main_process, load_model, load_tokenizer, resolve_base
from reflectevo.training.config import TrainConfig
from reflectevo.training.data import StageData, load_setting
from reflectevo.training.export import merge_adapter, model_card, save_adapter, save_full, write_card
from reflectevo.training.metrics import MetricsLog, plot_losses, plot_rewards

FINAL = "final_metrics.json"  # written last: its presence means the stage finished
OUTPUTS = ("checkpoints", "adapter", "model", FINAL)


def _quiet_library_bars() -> None:
    """Our own progress bar shows the steps; the libraries' per-phase bars would only add noise. So would
    a deprecation that is theirs to act on: PEFT and TRL still read transformers 5's renamed
    `is_gradient_checkpointing`, a FutureWarning on every trained model that a user can do nothing about."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def plan(cfg: TrainConfig) -> list[tuple[str, StageData, Path]]:
    """(stage, data, folder) per model to train; every input check happens here, before a model loads."""
    stages = load_setting(cfg.data, cfg.setting, cfg.allow_test_split, cfg.reward_task)
    resolve_base(cfg)
    out = Path(cfg.out).expanduser()
    folders = [(stage, data, out / stage if len(stages) > 1 else out) for stage, data in stages]
    if not cfg.resume:
        for _, _, folder in folders:
            found = [name for name in OUTPUTS if (folder / name).exists()]
            if found:
                raise InputError(f"{folder} already holds a training run ({', '.join(found)}); pass --resume to "
                                 f"continue it, or choose another --out")
    return folders


def _last_logged(history: list[dict], key: str):
    return next((entry[key] for entry in reversed(history) if key in entry), None)


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest checkpoint the Trainer finished writing; half-written ones (a kill during the save) go.

    The Trainer writes trainer_state.json last, so a checkpoint folder without it is incomplete, and
    resuming from it would fail.
    """
    if not checkpoints.is_dir():
        return None
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for candidate in found:
        if (candidate / "trainer_state.json").is_file():
            return str(candidate)
        console.print(f"[yellow]removing incomplete checkpoint {candidate} (interrupted while saving)[/yellow]")
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def prompt_budget(cfg: TrainConfig, kind: str) -> int:
    """The length `chat.fits` measures prompts against (it keeps 8 tokens for the reply). GRPO keeps room
    for a whole completion instead: prompts of at most max_length - max_completion_length tokens."""
    return cfg.max_length - cfg.max_completion_length + 8 if kind == "grpo" else cfg.max_length


def train_stage(cfg: TrainConfig, stage: str, data: StageData, folder: Path) -> dict:
    from datasets import Dataset

    ref = resolve_base(cfg)
    tokenizer = load_tokenizer(ref)
    budget = prompt_budget(cfg, data.kind)
    train_rows, dropped = chat.fits(tokenizer, data.train, budget)
    eval_rows, _ = chat.fits(tokenizer, data.validation, budget)
    limit = f"max_length={cfg.max_length} tokens" + (
        f" less max_completion_length={cfg.max_completion_length}" if data.kind == "grpo" else "")
    if not train_rows:
        raise InputError(f"{data.folder}: every prompt is longer than {limit}; raise --max-length")
    if dropped:
        console.print(f"[yellow]{data.name}: {dropped} of {len(data.train)} rows dropped: prompt longer than "
                      f"{limit}[/yellow]")
    cut, longest = chat.cut_replies(tokenizer, train_rows, cfg.max_length) if data.kind != "grpo" else (0, 0)
    if cut:  # kept, not dropped: dropping would change the row count the controls are matched on
        console.print(f"[yellow]{data.name}: {cut} of {len(train_rows)} rows are longer than "
                      f"max_length={cfg.max_length} tokens, so their replies lose the end (the final answer); "
                      f"--max-length {longest} keeps every row whole[/yellow]")
    (folder / FINAL).unlink(missing_ok=True)  # from a shorter earlier run: this one is not finished yet
    model = load_model(ref)
    callbacks = [MetricsLog(folder, f"setting {cfg.setting} {data.kind.upper()}"
                                    f"{' ' + stage if stage != 'model' else ''}")]
    train_set, eval_set = Dataset.from_list(train_rows), Dataset.from_list(eval_rows) if eval_rows else None
    if data.kind == "grpo":
        trainer = grpo.build_trainer(cfg, model, tokenizer, train_set, eval_set, folder, callbacks,
                                     tasks=data.judges)
        chat.check_rollout_rendering(trainer, train_rows, tokenizer, end_of_turn_ids(model, tokenizer))
    else:
        build = sft.build_trainer if data.kind == "sft" else dpo.build_trainer
        trainer = build(cfg, model, tokenizer, train_set, eval_set, folder, callbacks)
        chat.check_rendering(trainer.train_dataset, train_rows, tokenizer, cfg.max_length)

    checkpoints = folder / "checkpoints"
    last = last_complete_checkpoint(checkpoints) if cfg.resume else None
    if last:
        console.print(f"resuming {folder} from {last}")
    result = trainer.train(resume_from_checkpoint=last)
    trainer.save_state()
    history = trainer.state.log_history
    final = {"steps": result.global_step, "train_rows": len(train_rows), "rows_cut": cut,
             "train_loss": result.training_loss,
             "last_loss": _last_logged(history, "loss")}
    if data.kind == "dpo":
        final.update({k: _last_logged(history, k) for k in ("rewards/margins", "rewards/accuracies")})
    if data.kind == "grpo":
        final.update(grpo_summary(history))
    if eval_rows:
        final.update({k: v for k, v in trainer.evaluate().items()
                      if k in ("eval_loss", "eval_rewards/margins", "eval_rewards/accuracies", "eval_reward",
                               "eval_reward_std", "eval_rewards/correct/mean")})
        final["eval_rows"] = len(eval_rows)

    if cfg.full:
        save_full(trainer, folder / "model")
    else:
        save_adapter(trainer, folder / "adapter", base_name(cfg))
    if is_main_process():
        if not cfg.full and cfg.merge:
            del trainer, model  # free the training copy before loading the one to merge
            merge_adapter(folder / "adapter", folder / "model", tokenizer)
        write_card(model_card(cfg, stage, data, final, dropped), folder, folder / "adapter", folder / "model")
        title = f"setting {cfg.setting}{' ' + stage if stage != 'model' else ''} ({cfg.method})"
        plot_losses(folder, title)
        if data.kind == "grpo":
            plot_rewards(folder, title)
        write_json(folder / FINAL, final)
    return final


def grpo_summary(history: list[dict]) -> dict:
    """Setting V's reward at the start and the end of the run (means over up to 5 logged steps each)."""
    correct = [entry["rewards/correct/mean"] for entry in history if "rewards/correct/mean" in entry]
    mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
    head = correct[:min(5, max(1, len(correct) // 2))]
    return {"reward": _last_logged(history, "reward"), "reward_std": _last_logged(history, "reward_std"),
            "correct_first_steps": mean(head), "correct_last_steps": mean(correct[-len(head):])}


def finished(cfg: TrainConfig, folder: Path) -> dict | None:
    """With --resume, a finished stage is skipped unless --max-steps asks for more steps than it ran."""
    if not cfg.resume or not (folder / FINAL).is_file():
        return None
    done = json.loads((folder / FINAL).read_text())
    return done if cfg.max_steps <= done.get("steps", 0) else None


def train(cfg: TrainConfig) -> Path:
    """Train every model of the setting into `cfg.out`; returns the output folder."""
    folders = plan(cfg)
    _quiet_library_bars()
    out = Path(cfg.out).expanduser()
    main = is_main_process()
    with (RunDir(out) if main else nullcontext()) as run:
        if main:
            run.write_config({"train": cfg.model_dump()})
        results = {}
        for stage, data, folder in folders:
            done = finished(cfg, folder)
            if done is not None:
                console.print(f"{folder}: already trained ({done['steps']} steps), skipped")
                results[stage] = done
                continue
            results[stage] = train_stage(cfg, stage, data, folder)
        if main:
            run.write_manifest("train", cfg.model_dump(), results=results,
                               outputs=[str(f.relative_to(out) if f != out else ".") for _, _, f in folders])
            run.log(f"train setting {cfg.setting} ({cfg.method}): {results}")
    for stage, metrics in results.items():
        where = out / stage if len(folders) > 1 else out
        console.print(f"[green]trained[/green] {where}/model"
                      f"{'' if cfg.full else ' and ' + str(where) + '/adapter'}: "
                      f"{', '.join(f'{k}={v:.4g}' for k, v in metrics.items() if isinstance(v, float))}")
    return out
