"""Reflection learning (docs/training.md): the paper's four settings, setting V and the control on TRL + PEFT +
accelerate.

`train(TrainConfig(data=CURATED, setting="I", out=DIR))` trains; heavy libraries load only then.
`accelerate_config("deepspeed_zero3")` is the path of a shipped multi-GPU accelerate config.
"""

from __future__ import annotations

from pathlib import Path

from reflectevo.errors import InputError
from reflectevo.training.config import SETTINGS, TrainConfig

CONFIGS = Path(__file__).parent / "configs"


def train(cfg: TrainConfig) -> Path:
    from reflectevo.training.run import train as run

    return run(cfg)


def accelerate_config(name: str) -> Path:
    """A shipped accelerate config: `deepspeed_zero3` or `fsdp`."""
    path = CONFIGS / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.yaml")))
        raise InputError(f"no accelerate config {name!r}; shipped: {known}")
    return path


__all__ = ["SETTINGS", "TrainConfig", "accelerate_config", "train"]
