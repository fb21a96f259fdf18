"""The `reflectevo` command line: one thin command per stage. Errors a user can fix print as one line."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from reflectevo.errors import ReflectEvoError

app = typer.Typer(help="ReflectEvo: a small model learns to reflect on its own mistakes, from its own data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()


def user_errors(fn):
    """Turn a ReflectEvoError into `error: <message>` on stderr and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ReflectEvoError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(2)
        except KeyboardInterrupt:
            print("interrupted; finished work is cached, rerun the same command to resume", file=sys.stderr)
            raise typer.Exit(130)

    return wrapper


def _settings(config: Optional[Path], section: str, given: dict) -> dict:
    """YAML settings (a section of a run file, or the whole file), overridden by explicit options."""
    from reflectevo.config import load_yaml

    values = load_yaml(config, section) if config else {}
    values.update({k: v for k, v in given.items() if v is not None})
    return values


@app.command()
@user_errors
def generate(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="task name (see `reflectevo tasks`) or a task .yaml"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="generator: preset, model folder or .gguf [smollm2-135m]"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="run directory to write episodes.jsonl into"),
    reflector: Optional[str] = typer.Option(None, help="model that writes reflections [the generator]"),
    engine: Optional[str] = typer.Option(None, help="backend engine: auto, hf, llamacpp, openai, vllm"),
    split: Optional[str] = typer.Option(None, help="task split [the task's default]"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems only"),
    data: Optional[str] = typer.Option(None, help="data file for tasks that are not bundled"),
    few_shot: Optional[int] = typer.Option(None, help="few-shot examples in the prompt [0]"),
    instructions: Optional[str] = typer.Option(None, help="comma-separated instruction ids to draw from [all]"),
    num_instructions: Optional[int] = typer.Option(None, "-k", help="instructions per failure [2]; 0 = all"),
    samples: Optional[int] = typer.Option(None, help="reflections per instruction [2]"),
    max_tokens: Optional[int] = typer.Option(None, help="max new tokens per answer [256]"),
    reflection_max_tokens: Optional[int] = typer.Option(None, help="max new tokens per reflection [256]"),
    seed: Optional[int] = typer.Option(None, help="base seed [0]"),
    batch_size: Optional[int] = typer.Option(None, help="prompts per engine call [16]"),
    cache: Optional[str] = typer.Option(None, help="SQLite generation cache [~/.cache/reflectevo/generations.sqlite]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings (its `generate:` section)"),
):
    """Trial 1 on each problem, reflections on each failure, trial 2 after each reflection."""
    from reflectevo.config import GenerateConfig, build
    from reflectevo.stages.generate import generate as run

    given = dict(task=task, model=model, out=out_dir, reflector=reflector, engine=engine, split=split,
                 limit=limit, data=data, few_shot=few_shot, num_instructions=num_instructions,
                 samples=samples, max_tokens=max_tokens, reflection_max_tokens=reflection_max_tokens,
                 seed=seed, batch_size=batch_size, cache=cache,
                 instructions=instructions.split(",") if instructions else None)
    values = _settings(config, "generate", given)
    for required in ("task", "out"):
        if required not in values:
            raise ReflectEvoError(f"missing --{required} (or `{required}:` in the config file)")
    run(build(GenerateConfig, values, str(config or "command line")))


@app.command()
@user_errors
def tasks():
    """List the registered tasks."""
    from reflectevo.tasks import list_tasks

    table = Table("task", "description")
    for name, description in list_tasks().items():
        table.add_row(name, description)
    out.print(table)


@app.command()
@user_errors
def models():
    """List model presets and backend engines."""
    from reflectevo.backends import ENGINE_DESCRIPTIONS, _load_optional_engines, list_models

    table = Table("model preset", "description")
    for name, description in list_models().items():
        table.add_row(name, description)
    out.print(table)
    _load_optional_engines()
    engines = Table("engine", "description")
    for name, description in ENGINE_DESCRIPTIONS.items():
        engines.add_row(name, description)
    out.print(engines)
    out.print("Any HF model folder, PEFT adapter folder or .gguf file path also works as --model.")


@app.command("instructions")
@user_errors
def instructions_cmd(extra: list[Path] = typer.Argument(None, help="extra instruction JSONL files")):
    """List the reflection instruction pool (ids and texts)."""
    from reflectevo.prompts import load_pool

    table = Table("id", "instruction")
    for inst in load_pool(*(extra or [])).values():
        table.add_row(inst.id, inst.text)
    out.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
