"""Validated settings for each stage. One YAML file can hold them (a section per stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.errors import InputError


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GenerateConfig(StageConfig):
    """Trial 1 -> reflections for each failure -> trial 2 for each reflection (SPEC §1 steps 1-3)."""

    task: str
    out: str
    model: str = DEFAULT_MODEL
    reflector: str | None = Field(None, description="model that writes reflections (default: the generator)")
    engine: str = "auto"
    base_url: str | None = Field(None, description="OpenAI-compatible server URL(s), comma-separated (engine openai)")
    split: str | None = Field(None, description="split to generate on (default: train, where the task has one)")
    limit: int | None = Field(None, ge=1)
    data: str | None = Field(None, description="data file that replaces one split of the task (see data_split)")
    data_split: str | None = Field(None, description="the split the data file replaces (default: test)")
    few_shot: int = Field(0, ge=0)
    instructions: list[str] | None = Field(None, description="instruction ids to draw from (default: whole pool)")
    instruction_files: list[str] = Field(default_factory=list)
    num_instructions: int = Field(2, ge=0, description="instructions drawn per failure (0 = all candidates)")
    samples: int = Field(2, ge=1, description="reflections sampled per instruction (paper: 2)")
    temperature: float = Field(0.0, ge=0)
    reflection_temperature: float = Field(0.8, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    reflection_max_tokens: int = Field(256, ge=1)
    seed: int = 0
    batch_size: int | None = Field(None, ge=1, description="requests per engine call (default: the engine's own: "
                                                          "hf 16, openvino 32, openai 64)")
    cache: str | None = None
    no_cache: bool = False


SECTIONS = ("generate", "curate", "train", "evaluate", "evolve")


def load_yaml(path: str | Path, section: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or " ".join(str(exc).split())  # one line, even for a ReaderError
        raise InputError(f"{path}{where}: invalid YAML ({reason})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of settings at the top level")
    if section is not None and section in data:
        data = data[section]
        if not isinstance(data, dict):
            what = "is empty" if data is None else f"holds a {type(data).__name__}, not a mapping of settings"
            raise InputError(f"{path}: section '{section}:' {what}; give it settings (name: value) or remove it")
    for name, value in data.items():  # sections of a run file (evolve's generate:, train:, ...) likewise
        if name in SECTIONS and not isinstance(value, dict):
            what = "is empty" if value is None else f"holds a {type(value).__name__}, not a mapping of settings"
            raise InputError(f"{path}: section '{name}:' {what}; give it settings (name: value) or remove it")
    return data


def build(cls: type[StageConfig], values: dict[str, Any], source: str = "settings") -> StageConfig:
    """Validate settings; the first problem becomes a one-line InputError naming the setting."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InputError(f"{source}: setting {where!r}: {err['msg']}") from exc


class EvaluateConfig(StageConfig):
    """Test-time evaluation (SPEC §6): trial 1, then reflection + correction, oracle-gated and oracle-free."""

    tasks: list[str] = Field(min_length=1)
    out: str
    generator: str = DEFAULT_MODEL
    reflector: str | None = Field(None, description="model that reflects (default: the generator)")
    corrector: str | None = Field(None, description="two-stage: model that writes trial 2 (default: the generator)")
    self_checker: str | None = Field(None, description="oracle-free: model that decides to revise (default: the generator)")
    mode: str = Field("two-stage", pattern="^(two-stage|one-stage)$")
    oracle_free: bool = True
    retry_baseline: bool = Field(True, description="also retry each failure without reflection (the baseline "
                                                   "of the reflection value)")
    engine: str = "auto"
    split: str = "test"
    limit: int | None = Field(None, ge=1)
    data: str | None = Field(None, description="data file that replaces one split (only with a single task)")
    data_split: str | None = Field(None, description="the split the data file replaces (default: test)")
    few_shot: int = Field(0, ge=0)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(256, ge=1)
    reflection_max_tokens: int = Field(256, ge=1)
    self_check_max_tokens: int = Field(128, ge=1)
    seed: int = 0
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% CIs (0 = none)")
    batch_size: int | None = Field(None, ge=1, description="requests per engine call (default: the engine's own: "
                                                          "hf 16, openvino 32, openai 64)")
    cache: str | None = None
    no_cache: bool = False
