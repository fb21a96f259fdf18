"""Trained outputs every backend loads by path: `adapter/` (LoRA), `model/` (a full HF model folder,
the adapter merged in) and a model card (README.md) stating data, setting, hyper-parameters and metrics.

Folders are written beside their final place and renamed into it, so a crash never leaves a half model
where a backend would pick it up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from reflectevo.backends.models import hf_folder, resolve
from reflectevo.runs import write_atomic
from reflectevo.training.config import GRPO_FIELDS, SETTINGS, TrainConfig
from reflectevo.training.data import StageData


def _staging(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))


def _publish(staging: Path, target: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp and some writers make owner-only files; outputs should read like any other folder.
    staging.chmod(0o777 & ~umask)
    for file in staging.iterdir():
        file.chmod(0o666 & ~umask)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def save_adapter(trainer, target: Path, base: str) -> Path:
    """The LoRA adapter, naming a base that `models.resolve` finds (a preset name or an absolute folder)."""
    staging = _staging(target)
    trainer.save_model(str(staging))  # accelerate-aware: gathers ZeRO-3 / FSDP shards on save
    config_path = staging / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    write_atomic(config_path, json.dumps(config, indent=2) + "\n")
    _publish(staging, target)
    return target


def save_full(trainer, target: Path) -> Path:
    staging = _staging(target)
    trainer.save_model(str(staging))
    _publish(staging, target)
    return target


def merge_adapter(adapter: Path, target: Path, tokenizer) -> Path:
    """Reload base + adapter from disk and merge: proves the adapter loads, and works after sharded training."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ref = resolve(adapter)
    model = AutoModelForCausalLM.from_pretrained(hf_folder(ref), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    staging = _staging(target)
    merged.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    _publish(staging, target)
    return target


def model_card(cfg: TrainConfig, stage: str, data: StageData, metrics: dict, dropped: int) -> str:
    """README.md: what was trained on what, how, and how well (HF model-card front matter included)."""
    front = {"library_name": "transformers" if cfg.full else "peft", "base_model": cfg.model,
             "tags": ["reflectevo", "trl", data.kind, cfg.method]}
    role = next((s.role_text for s in cfg.spec.stages if s.name == stage and s.role_text), None)
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# ReflectEvo setting {cfg.setting}{f' {stage}' if role else ''} ({cfg.method})", "",
             f"Setting {cfg.setting}: {SETTINGS.get(cfg.setting).description}.",
             *([f"This model is {stage}: {role}. Evaluate with stage1 as the reflector and stage2 as the "
                "generator/corrector."] if role else []), "",
             "## Data", "",
             f"- curated dataset `{data.name}` ({data.kind.upper()}): {len(data.train)} training rows"
             f"{f' ({dropped} dropped: prompt longer than max_length)' if dropped else ''}"
             f"{f' ({cut} cut at max_length: replies without their end)' if (cut := metrics.get('rows_cut')) else ''}, "
             f"{len(data.validation)} validation rows",
             f"- tasks: {', '.join(f'{t} ({n})' for t, n in sorted(data.tasks.items()))}",
             *(f"- `{path}` sha256 `{digest[:16]}`" for path, digest in data.files.items()), "",
             "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    shown = cfg.model_dump(exclude={"data", "out", "resume"})
    if cfg.full:
        shown = {k: v for k, v in shown.items() if not k.startswith("lora_")}
    if data.kind != "dpo":
        shown = {k: v for k, v in shown.items() if k not in ("beta", "loss_type")}
    if data.kind != "grpo":  # setting V's options mean nothing to SFT and DPO
        shown = {k: v for k, v in shown.items() if k not in GRPO_FIELDS}
    elif not cfg.use_vllm:
        shown = {k: v for k, v in shown.items() if not k.startswith("vllm_")}
    shown["learning_rate"] = cfg.lr(data.kind)
    lines += [f"| {k} | {v} |" for k, v in shown.items()]
    lines += ["", "## Final metrics", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    if data.kind == "grpo":
        lines += ["", "Rewards per step are in `metrics.jsonl` (`reward`, `reward_std`, `rewards/correct/mean`, ...) "
                      "and `rewards.png`. Evaluate in one-stage mode (one reply: reflection + corrected answer):",
                  "`reflectevo evaluate --mode one-stage --generator <this folder> ...`."]
    lines += ["", "## Use", "", "```bash",
              "reflectevo generate --model <this folder> ...   # as generator (or --reflector)", "```", "",
              "Trained with reflectevo on TRL + PEFT; the loss curve is `loss.png`, "
              "every logged value is in `metrics.jsonl`.", ""]
    return "\n".join(lines)


def write_card(text: str, *folders: Path) -> None:
    for folder in folders:
        if folder.is_dir():
            write_atomic(folder / "README.md", text)
