"""Multi-process training on CPU: `accelerate launch --num_processes 2` (DDP over gloo) with the shipped
ddp_cpu config, against a single process with the same global batch, for SFT (LoRA) and DPO."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reflectevo.stages.curate import write_dataset
from reflectevo.tasks import get_task
from reflectevo.training import accelerate_config

# Rows in file order, so both launches see the same rows in every global batch.
SETTINGS = {"lora_dropout": 0.0, "precision": "fp32", "logging_steps": 1, "max_steps": 4, "max_length": 512,
            "learning_rate": 0.001, "seed": 0, "data_order": "sequential"}


def data(root: Path) -> Path:
    """16 SFT rows (the control's shape) and 16 DPO pairs built from `add` train problems."""
    from reflectevo.prompts import test_reflection_prompt

    task = get_task("add")
    problems = task.load("train")[:16]
    sft = [{"prompt": task.prompt(p), "completion": [{"role": "assistant", "content": p.gold}], "task": "add",
            "split": "train", "episode_id": p.id, "reflection_index": None, "instruction_id": None} for p in problems]
    pairs = [{"prompt": test_reflection_prompt(task.prompt(p), str(int(p.gold) + 1), "incorrect"),
              "chosen": [{"role": "assistant", "content": "I added the ones digits wrong; add them again and carry."}],
              "rejected": [{"role": "assistant", "content": "The answer looks fine to me."}],
              "task": "add", "split": "train", "episode_id": p.id, "chosen_reflection_index": 0,
              "rejected_reflection_index": 1, "chosen_instruction_id": "a", "rejected_instruction_id": "b"}
             for p in problems]
    write_dataset(root / "sft_self_train", "sft_self_train", {"train": sft, "validation": []})
    write_dataset(root / "dpo_contrastive", "dpo_contrastive", {"train": pairs, "validation": []})
    (root / "settings.yaml").write_text(yaml.safe_dump({"train": SETTINGS}))
    return root


def losses(folder: Path) -> list[float]:
    return [row["loss"] for row in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in row]


def train(data_dir: Path, setting: str, out: Path, processes: int) -> list[float]:
    command = ["-m", "reflectevo.cli", "train", str(data_dir), "--setting", setting, "--out", str(out),
               "--batch-size", str(4 // processes), "--config", str(data_dir / "settings.yaml")]
    if processes > 1:
        command = ["-m", "accelerate.commands.launch", "--config_file", str(accelerate_config("ddp_cpu")),
                   "--num_processes", str(processes), *command]
    env = {**os.environ, "REFLECTEVO_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return losses(out)


def weight_gap(first: Path, second: Path) -> float:
    """Relative L2 distance between two LoRA adapters' weights."""
    from safetensors.torch import load_file

    a, b = (load_file(folder / "adapter" / "adapter_model.safetensors") for folder in (first, second))
    gap = sum(float(((a[k] - b[k]).float() ** 2).sum()) for k in a)
    return (gap / sum(float((a[k].float() ** 2).sum()) for k in a)) ** 0.5


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    root = data(tmp_path / "curated")
    # DPO: both launches see the same pairs in every global batch (rows in file order); the logged
    # curves agree within 2% per step, and the adapters within 5% (measured: 0.4% and 1.8%).
    one, two = train(root, "III", tmp_path / "dpo-1", 1), train(root, "III", tmp_path / "dpo-2", 2)
    assert len(one) == len(two) == 4 and two[-1] < two[0] and one[-1] < one[0]
    assert all(abs(a - b) <= 0.02 * a for a, b in zip(one, two)), (one, two)
    assert weight_gap(tmp_path / "dpo-1", tmp_path / "dpo-2") < 0.05
    # SFT: the same rows, but a multi-process run logs the loss of rank 0's share of each global batch
    # (so its logged curve is not the single run's: measured 2.31 vs 2.15 at the first step, same
    # model, same rows); what training does is compared through the weights: within 10% (measured 5.9%).
    one, two = train(root, "control", tmp_path / "sft-1", 1), train(root, "control", tmp_path / "sft-2", 2)
    assert len(one) == len(two) == 4 and two[-1] < two[0] and one[-1] < one[0]
    assert weight_gap(tmp_path / "sft-1", tmp_path / "sft-2") < 0.10
    # The adapter saved by rank 0 loads and generates.
    from reflectevo.backends import SamplingParams, load_backend

    backend = load_backend(str(tmp_path / "sft-2" / "adapter"), "hf", batch_size=2)
    (completion,), = backend.generate([[{"role": "user", "content": "Calculate 12 + 30."}]], SamplingParams(max_tokens=6))
    assert completion.tokens > 0
    backend.close()
