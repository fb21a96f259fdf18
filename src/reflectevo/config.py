"""Validated settings for each stage, composed from shared parts; the CLI is made from them (options.py).
One YAML file can hold them, a section per stage; a YAML key and a flag are the same setting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import PydanticCustomError

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.errors import InputError


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Shared parts: every stage that loads a model, reads a task, samples or caches declares these fields
# by inheriting the part, so a flag (and a YAML key) means the same thing in every stage that has it.

class EngineOptions(BaseModel):
    engine: str = Field("auto", description="backend engine (`reflectevo models` lists them); auto: openvino where "
                                            "installed and no GPU, else hf")
    base_url: str | None = Field(None, description="OpenAI-compatible server URL(s), comma-separated (engine "
                                                   "openai; implied by a URL when engine is auto)")
    batch_size: int | None = Field(None, ge=1, description="requests per engine call (default: the engine's own: "
                                                          "hf 16, openvino 32, openai 64)")

    def engine_name(self) -> str:
        """A base URL means an OpenAI-compatible server: engine "openai" unless another engine was named."""
        if self.base_url and self.engine not in ("auto", "openai"):
            raise InputError(f"setting 'base_url' is for engine 'openai' (an OpenAI-compatible server); engine "
                             f"{self.engine!r} runs the model in this process: drop --base-url or use --engine "
                             f"openai")
        return "openai" if self.base_url and self.engine == "auto" else self.engine

    def engine_options(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, **({"base_url": self.base_url} if self.base_url else {})}


class TaskOptions(BaseModel):
    limit: int | None = Field(None, ge=1, description="the first N problems only")
    data: str | None = Field(None, description="data file that replaces one split of the task (see data_split)")
    data_split: str | None = Field(None, description="the split the data file replaces (default: test)")
    few_shot: int = Field(0, ge=0, description="few-shot examples in the prompt")


class SamplingOptions(BaseModel):
    temperature: float = Field(0.0, ge=0, description="sampling temperature of answers (0: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_tokens: int = Field(256, ge=1, description="max new tokens per answer")
    reflection_max_tokens: int = Field(256, ge=1, description="max new tokens per reflection")
    seed: int = Field(0, description="base seed (sampling; evaluation: also the bootstrap)")


class CacheOptions(BaseModel):
    cache: str | None = Field(None, description="SQLite generation cache (default: "
                                                "$REFLECTEVO_HOME/generations.sqlite)")
    no_cache: bool = Field(False, description="neither read nor write the generation cache")


class GenerateConfig(StageConfig, EngineOptions, TaskOptions, SamplingOptions, CacheOptions):
    """Trial 1 -> reflections for each failure -> trial 2 for each reflection (the episodes of records.py)."""

    task: str = Field(description="task name (`reflectevo tasks` lists them) or a task .yaml file")
    out: str = Field(description="run directory to write episodes.jsonl into")
    model: str = Field(DEFAULT_MODEL, description="generator: model preset, model folder or .gguf file")
    reflector: str | None = Field(None, description="model that writes reflections (default: the generator)")
    split: str | None = Field(None, description="split to generate on (default: train, where the task has one)")
    instructions: list[str] | None = Field(None, description="instruction ids to draw from (default: whole pool)")
    instruction_files: list[str] = Field(default_factory=list, description="extra instruction JSONL files")
    num_instructions: int = Field(2, ge=0, description="instructions drawn per failure (0 = all candidates)")
    samples: int = Field(2, ge=1, description="reflections sampled per instruction (paper: 2)")
    reflection_temperature: float = Field(0.8, ge=0, description="sampling temperature of reflections")


def Section(cls: type[StageConfig]):  # noqa: N802 - reads as a type in a config class
    """A YAML mapping of settings for stage config `cls` (evolve's generate:, train:, ... sections): each key
    must be one of its fields and each value valid for it; required fields are the loop's to fill in."""

    adapters: dict[str, TypeAdapter] = {}  # one per field, built when a section first sets it

    def check(values: dict[str, Any]) -> dict[str, Any]:
        for key, value in values.items():
            field = cls.model_fields.get(key)
            if field is None:
                raise PydanticCustomError("section", "{msg}", {"key": key, "msg": f"not a setting of {cls.__name__} "
                                                               f"(known: {', '.join(sorted(cls.model_fields))})"})
            try:
                if key not in adapters:
                    kind = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
                    adapters[key] = TypeAdapter(kind)
                adapters[key].validate_python(value)
            except ValidationError as exc:
                raise PydanticCustomError("section", "{msg}", {"key": key, "msg": exc.errors()[0]["msg"]}) from None
        return values

    return Annotated[dict[str, Any], AfterValidator(check)]


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
        msg = err["msg"]
        if err["type"] == "section":  # a setting inside a section (Section): name it as section.key
            where, msg = f"{where}.{err['ctx']['key']}", err["ctx"]["msg"]
        raise InputError(f"{source}: setting {where!r}: {msg.replace('Value error, ', '')}") from exc


class EvaluateConfig(StageConfig, EngineOptions, TaskOptions, SamplingOptions, CacheOptions):
    """Test-time evaluation (docs/evaluation.md): trial 1, then reflection + correction, oracle-gated and
    oracle-free, and the retry without reflection."""

    tasks: list[str] = Field(min_length=1, description="task names or task .yaml files")
    out: str = Field(description="run directory for results.json and samples.jsonl")
    generator: str = Field(DEFAULT_MODEL, description="model that answers trial 1")
    reflector: str | None = Field(None, description="model that reflects, e.g. a trained adapter folder (default: "
                                                    "the generator)")
    corrector: str | None = Field(None, description="two-stage: model that writes trial 2 (default: the generator)")
    self_checker: str | None = Field(None, description="oracle-free: model that decides to revise (default: the "
                                                       "generator)")
    mode: Literal["two-stage", "one-stage"] = Field("two-stage", description="two-stage: reflect, then correct; "
                                                                             "one-stage: one reply holds both")
    oracle_free: bool = Field(True, description="also run the oracle-free protocol (the model's own self-check)")
    retry_baseline: bool = Field(True, description="also retry each failure without reflection (the baseline "
                                                   "of the reflection value)")
    split: str = Field("test", description="split to evaluate on")
    self_check_max_tokens: int = Field(128, ge=1, description="max new tokens per self-check")
    bootstrap: int = Field(1000, ge=0, description="bootstrap resamples for 95% CIs (0 = none)")
