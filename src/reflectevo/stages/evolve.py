"""Self-evolution (SPEC §1 step 7): generate -> curate -> train -> evaluate, iteration after iteration.

    OUT/plan.json               the plan (also what --dry-run prints)
    OUT/iter_0/evaluate/        the starting model on the held-out test split (the baseline)
    OUT/iter_k/generate/        episodes of the current model on the train split
    OUT/iter_k/curate/          its curated training sets
    OUT/iter_k/train/           the model trained on them (setting II: train/stage1, train/stage2)
    OUT/iter_k/evaluate/        that model on the test split
    OUT/iter_k/lineage.json     which data and model produced which model and score
    OUT/evolve.json             all iterations, the best model, why the loop stopped
    OUT/report.html             every evaluation side by side

Each step is skipped when its final output exists, and generation is cached, so an interrupted loop
resumes where it stopped. The loop stops after `iterations`, or when the held-out metric has not
improved by more than `min_delta` for `patience` iterations; the best model is kept in evolve.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.config import EvaluateConfig, GenerateConfig, StageConfig, build
from reflectevo.errors import InputError
from reflectevo.progress import console
from reflectevo.runs import RunDir, write_json

Metric = Literal["acc_t2_oracle", "acc_t2_free", "acc_t1"]


class EvolveConfig(StageConfig):
    """The whole loop in one place; the stage sections override that stage's own settings."""

    task: str
    out: str
    model: str = DEFAULT_MODEL
    setting: Literal["I", "II", "III", "IV"] = "I"
    iterations: int = Field(2, ge=1)
    patience: int = Field(1, ge=1, description="stop after this many iterations without improvement")
    min_delta: float = Field(0.0, ge=0, description="smallest gain of the metric that counts as improvement")
    metric: Metric = "acc_t2_oracle"
    data: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    seed: int = 0
    cache: str | None = None
    generate: dict[str, Any] = Field(default_factory=dict)
    curate: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: dict[str, Any] = Field(default_factory=dict)


class Models(StageConfig):
    """Who plays which role in an iteration (setting II trains a separate reflector and corrector)."""

    generator: str
    reflector: str


def iter_dir(cfg: EvolveConfig, k: int) -> Path:
    return Path(cfg.out) / f"iter_{k}"


def trained_models(cfg: EvolveConfig, train_dir: Path) -> Models:
    if cfg.setting == "II":
        return Models(generator=str(train_dir / "stage2" / "model"), reflector=str(train_dir / "stage1" / "model"))
    return Models(generator=str(train_dir / "model"), reflector=str(train_dir / "model"))


# ------------------------------------------------------------------------------- stage configs

def generate_config(cfg: EvolveConfig, k: int, models: Models) -> GenerateConfig:
    values = {"task": cfg.task, "out": str(iter_dir(cfg, k) / "generate"), "model": models.generator,
              "reflector": models.reflector if models.reflector != models.generator else None,
              "split": cfg.train_split, "limit": cfg.train_limit, "data": cfg.data, "seed": cfg.seed + k,
              "cache": cfg.cache, **cfg.generate}
    return build(GenerateConfig, values, "evolve: generate")


def curate_config(cfg: EvolveConfig, k: int):
    from reflectevo.stages.curate import CurateConfig

    folder = iter_dir(cfg, k)
    values = {"source": str(folder / "generate"), "out": str(folder / "curate"), "seed": cfg.seed,
              "cache": cfg.cache, **cfg.curate}
    return build(CurateConfig, values, "evolve: curate")


def train_config(cfg: EvolveConfig, k: int, models: Models):
    from reflectevo.training import TrainConfig

    folder = iter_dir(cfg, k)
    # Setting II's stages are both trained from the current corrector's weights.
    values = {"data": str(folder / "curate"), "setting": cfg.setting, "out": str(folder / "train"),
              "model": models.generator, "seed": cfg.seed, **cfg.train}
    return build(TrainConfig, values, "evolve: train")


def evaluate_config(cfg: EvolveConfig, k: int, models: Models) -> EvaluateConfig:
    values = {"tasks": [cfg.task], "out": str(iter_dir(cfg, k) / "evaluate"), "generator": models.generator,
              "reflector": models.reflector if models.reflector != models.generator else None,
              "mode": "one-stage" if cfg.setting == "I" else "two-stage", "split": cfg.test_split,
              "limit": cfg.test_limit, "data": cfg.data, "seed": cfg.seed, "cache": cfg.cache, **cfg.evaluate}
    return build(EvaluateConfig, values, "evolve: evaluate")


def validate_sections(cfg: EvolveConfig) -> None:
    """Build every stage's config once, so a bad setting fails now and not an hour into the loop."""
    models = Models(generator=cfg.model, reflector=cfg.model)
    generate_config(cfg, 1, models)
    curate_config(cfg, 1)
    train_config(cfg, 1, models)
    evaluate_config(cfg, 1, models)


# ------------------------------------------------------------------------------------ the loop

def plan(cfg: EvolveConfig) -> list[dict[str, Any]]:
    """Every step the loop would run, in order (paths of later models are those training will write)."""
    validate_sections(cfg)
    steps = [{"iteration": 0, "stage": "evaluate", "out": str(iter_dir(cfg, 0) / "evaluate"),
              "models": {"generator": cfg.model, "reflector": cfg.model}}]
    models = Models(generator=cfg.model, reflector=cfg.model)
    for k in range(1, cfg.iterations + 1):
        folder = iter_dir(cfg, k)
        trained = trained_models(cfg, folder / "train")
        steps += [
            {"iteration": k, "stage": "generate", "out": str(folder / "generate"), "models": models.model_dump()},
            {"iteration": k, "stage": "curate", "out": str(folder / "curate"),
             "models": {"episodes": str(folder / "generate" / "episodes.jsonl")}},
            {"iteration": k, "stage": "train", "out": str(folder / "train"), "setting": cfg.setting,
             "from": models.generator},
            {"iteration": k, "stage": "evaluate", "out": str(folder / "evaluate"), "models": trained.model_dump()},
        ]
        models = trained
    return steps


def metric_of(results: dict, name: Metric) -> tuple[float, list[float] | None]:
    overall = results["metrics"]["overall"]
    estimate = {"acc_t1": overall["acc_t1"], "acc_t2_oracle": overall["oracle"]["acc_t2"],
                "acc_t2_free": (overall.get("oracle_free") or {}).get("acc_t2")}[name]
    if estimate is None:
        raise InputError(f"evolve: metric {name!r} was not measured (oracle-free evaluation is off?)")
    return estimate["value"], estimate.get("ci")


def _done(path: Path) -> bool:
    return path.is_file()


def run_evaluate(cfg: EvolveConfig, k: int, models: Models) -> dict:
    import json

    from reflectevo.stages.evaluate import evaluate

    ecfg = evaluate_config(cfg, k, models)
    results = Path(ecfg.out) / "results.json"
    if not _done(results):
        evaluate(ecfg)
    return json.loads(results.read_text())


def run_iteration(cfg: EvolveConfig, k: int, models: Models) -> Models:
    """generate -> curate -> train on the current models; returns the trained models."""
    from reflectevo.stages.curate import curate
    from reflectevo.stages.generate import generate
    from reflectevo.training import STAGES, train

    folder = iter_dir(cfg, k)
    gcfg = generate_config(cfg, k, models)
    if not _done(Path(gcfg.out) / "episodes.jsonl"):
        generate(gcfg)
    ccfg = curate_config(cfg, k)
    if not _done(Path(ccfg.out) / "curation.json"):
        try:
            curate(ccfg)
        except InputError as exc:  # e.g. no reflection corrected any answer: nothing to learn from
            raise NothingToLearn(str(exc)) from exc
    tcfg = train_config(cfg, k, models)
    stage_dirs = [Path(tcfg.out) / name if len(STAGES[cfg.setting]) > 1 else Path(tcfg.out)
                  for name, _, _ in STAGES[cfg.setting]]
    if not all(_done(d / "final_metrics.json") for d in stage_dirs):
        missing = [name for _, name, _ in STAGES[cfg.setting] if not _has_rows(Path(ccfg.out) / name)]
        if missing:
            raise NothingToLearn(f"setting {cfg.setting} needs {', '.join(missing)}, which curation left empty "
                                 f"({Path(ccfg.out) / 'curation.json'})")
        train(tcfg)
    return trained_models(cfg, folder / "train")


class NothingToLearn(Exception):
    """An iteration produced no training rows for the setting: the loop stops there, keeping its best."""


def _has_rows(dataset: Path) -> bool:
    train = dataset / "train.jsonl"
    return train.is_file() and train.stat().st_size > 0


def improved(history: list[dict], cfg: EvolveConfig) -> bool:
    """False once the last `patience` iterations all failed to beat the best score before them."""
    scores = [h["score"] for h in history]
    if len(scores) <= cfg.patience:
        return True
    best_before = max(scores[: -cfg.patience])
    return any(s > best_before + cfg.min_delta for s in scores[-cfg.patience:])


def evolve(cfg: EvolveConfig, dry_run: bool = False) -> Path:
    steps = plan(cfg)
    if dry_run:
        print_plan(cfg, steps)
        return Path(cfg.out) / "plan.json"
    from reflectevo.tasks import get_task

    task = get_task(cfg.task, data_path=cfg.data)  # unknown tasks and missing splits fail before any work
    for split in (cfg.train_split, cfg.test_split):
        if split not in task.splits:
            raise InputError(f"evolve: task {cfg.task!r} has no split {split!r}; splits: {', '.join(task.splits)}")
    out = Path(cfg.out)
    with RunDir(out) as run:
        run.write_config({"evolve": cfg.model_dump()})
        write_json(out / "plan.json", steps)
    models = Models(generator=cfg.model, reflector=cfg.model)
    console.rule("[bold]iteration 0: the starting model on the test split")
    results = run_evaluate(cfg, 0, models)
    score, ci = metric_of(results, cfg.metric)
    history = [{"iteration": 0, "models": models.model_dump(), "score": score, "ci": ci,
                "results": str(iter_dir(cfg, 0) / "evaluate" / "results.json")}]
    stopped = f"ran all {cfg.iterations} iterations"
    for k in range(1, cfg.iterations + 1):
        so_far = ", ".join(f"{h['score']:.3f}" for h in history)
        console.rule(f"[bold]iteration {k} of {cfg.iterations}: {cfg.metric} so far {so_far}")
        try:
            trained = run_iteration(cfg, k, models)
        except NothingToLearn as exc:
            stopped = f"iteration {k} had nothing to learn from: {exc}"
            console.print(f"[yellow]stopping:[/yellow] {stopped}")
            break
        results = run_evaluate(cfg, k, trained)
        score, ci = metric_of(results, cfg.metric)
        folder = iter_dir(cfg, k)
        lineage = {"iteration": k, "from_models": models.model_dump(), "task": cfg.task,
                   "episodes": str(folder / "generate" / "episodes.jsonl"), "curated": str(folder / "curate"),
                   "setting": cfg.setting, "models": trained.model_dump(), "score": score, "ci": ci,
                   "metric": cfg.metric, "results": str(folder / "evaluate" / "results.json")}
        write_json(folder / "lineage.json", lineage)
        history.append(lineage)
        models = trained
        if not improved(history, cfg):
            stopped = f"plateau: no gain above {cfg.min_delta} in {cfg.patience} iteration(s)"
            break
    best = max(history, key=lambda h: h["score"])
    summary = {"metric": cfg.metric, "setting": cfg.setting, "task": cfg.task, "history": history,
               "best": {"iteration": best["iteration"], "models": best["models"], "score": best["score"],
                        "ci": best["ci"]}, "stopped": stopped}
    with RunDir(out):
        write_json(out / "evolve.json", summary)
    report = write_evolve_report(cfg, history)
    print_history(summary)
    console.print(f"[green]report:[/green] {report}")
    return report


def write_evolve_report(cfg: EvolveConfig, history: list[dict]) -> Path:
    from reflectevo.report.html import write_report

    runs = [str(Path(h["results"]).parent) for h in history]
    runs += [str(iter_dir(cfg, h["iteration"]) / "generate") for h in history if h["iteration"] > 0]
    html, _ = write_report(runs, Path(cfg.out) / "report.html")
    return html


def print_history(summary: dict) -> None:
    from rich.table import Table

    table = Table("iteration", summary["metric"], "95% CI", "generator", title=f"evolution ({summary['stopped']})")
    for h in summary["history"]:
        ci = h.get("ci")
        table.add_row(str(h["iteration"]), f"{h['score']:.3f}", f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-",
                      h["models"]["generator"])
    console.print(table)
    console.print(f"best: iteration {summary['best']['iteration']} ({summary['best']['models']['generator']})")


def print_plan(cfg: EvolveConfig, steps: list[dict]) -> None:
    from rich.table import Table

    table = Table("iter", "stage", "models / data", "output", title=f"plan: {cfg.task}, setting {cfg.setting}, "
                  f"up to {cfg.iterations} iterations, stop on a plateau of {cfg.metric} (patience {cfg.patience})")
    for step in steps:
        detail = step.get("models") or {"from": step.get("from", "")}
        table.add_row(str(step["iteration"]), step["stage"], ", ".join(f"{k}={v}" for k, v in detail.items()),
                      step["out"])
    console.print(table)
