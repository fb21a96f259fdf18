"""Self-evolution (docs/evolution.md): generate -> curate -> train -> evaluate, iteration after iteration.

    OUT/plan.json               the plan (also what --dry-run prints)
    OUT/iter_0/validate/        the starting model on the validation split (what the loop decides on)
    OUT/iter_0/evaluate/        the starting model on the test split (reported, never decided on)
    OUT/iter_k/generate/        episodes of the current model on the train split
    OUT/iter_k/curate/          its curated training sets
    OUT/iter_k/train/           the model trained on them (setting II: train/stage1, train/stage2)
    OUT/iter_k/validate/        that model on the validation split
    OUT/iter_k/evaluate/        that model on the test split
    OUT/iter_k/lineage.json     which data and model produced which model and scores
    OUT/evolve.json             all iterations, the model the loop would ship and why, why it stopped
    OUT/report.html             every evaluation side by side

Science first: generation reads the train split, the best model and the plateau rule read the validation
split (carved from train by problem hash, so it never overlaps train or test), and the test split is
evaluated once per model for the report only. No choice the loop makes reads a test score.

Each step writes `step.json` beside its output: a hash of the step's resolved settings chained with the
hash of the step it depends on. A step is skipped only when its output exists and its hash matches; a
step whose settings changed (or whose input was redone) is redone, and its old folder is moved aside to
`<folder>.stale-<hash>` rather than deleted. Generation is cached and training resumes from checkpoints,
so an interrupted loop resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from reflectevo.backends.models import DEFAULT_MODEL
from reflectevo.config import EvaluateConfig, GenerateConfig, Section, StageConfig, build
from reflectevo.errors import InputError
from reflectevo.progress import console
from reflectevo.records import TEST_SPLIT, read_samples
from reflectevo.report.metrics import paired_gain
from reflectevo.runs import RunDir, write_json
from reflectevo.stages.curate import CurateConfig, curate
from reflectevo.stages.evaluate import evaluate, outcome
from reflectevo.stages.generate import generate
from reflectevo.tasks import get_task
from reflectevo.training import train
from reflectevo.training.config import SETTINGS, Setting, TrainConfig

GenerateSection, CurateSection = Section(GenerateConfig), Section(CurateConfig)
TrainSection, EvaluateSection = Section(TrainConfig), Section(EvaluateConfig)
Metric = Literal["acc_t2_oracle", "acc_t2_free", "acc_t1"]
STAMP = "step.json"


class EvolveConfig(StageConfig):
    """The whole loop in one place; the stage sections override that stage's own settings."""

    task: str = Field(description="task name (`reflectevo tasks` lists them) or a task .yaml file")
    out: str = Field(description="loop directory (iter_k/ folders inside)")
    model: str = Field(DEFAULT_MODEL, description="starting model: preset or model folder")
    setting: Setting = Field("I", description="training setting (`reflectevo settings` lists them)")
    iterations: int = Field(2, ge=1, description="most iterations")
    patience: int = Field(1, ge=1, description="stop after this many iterations without improvement")
    min_delta: float = Field(0.0, ge=0, description="smallest gain of the metric that counts as improvement")
    metric: Metric = Field("acc_t2_oracle", description="what the loop maximises, on the validation split")
    data: str | None = Field(None, description="data file that replaces one split of the task (see data_split)")
    data_split: str | None = Field(None, description="the split the data file replaces (default: test_split)")
    train_split: str = Field("train", description="generation reads it (the model trains on what it yields)")
    validation_split: str = Field("validation", description="decides the best model and the plateau")
    test_split: str = Field("test", description="reported once per model, never decided on")
    train_limit: int | None = Field(None, ge=1, description="train problems per iteration (default: all)")
    validation_limit: int | None = Field(None, ge=1, description="validation problems (default: all)")
    test_limit: int | None = Field(None, ge=1, description="test problems (default: all)")
    seed: int = Field(0, description="base seed (iteration k generates with seed + k)")
    cache: str | None = Field(None, description="SQLite generation cache of every stage")
    # The stages' own settings, each checked against its stage's config when the file is read.
    generate: GenerateSection = Field(default_factory=dict, description="generate settings (YAML)")
    curate: CurateSection = Field(default_factory=dict, description="curate settings (YAML)")
    train: TrainSection = Field(default_factory=dict, description="train settings (YAML)")
    evaluate: EvaluateSection = Field(default_factory=dict, description="evaluate settings (YAML)")


class Models(StageConfig):
    """Who plays which role in an iteration (setting II trains a separate reflector and corrector)."""

    generator: str
    reflector: str


def iter_dir(cfg: EvolveConfig, k: int) -> Path:
    return Path(cfg.out) / f"iter_{k}"


def trained_models(cfg: EvolveConfig, train_dir: Path) -> Models:
    return Models(**SETTINGS.get(cfg.setting).obj.models(train_dir))


# ------------------------------------------------------------------------------- stage configs

def _data(cfg: EvolveConfig) -> dict:
    return {"data": cfg.data, "data_split": cfg.data_split or cfg.test_split} if cfg.data else {}


def generate_config(cfg: EvolveConfig, k: int, models: Models) -> GenerateConfig:
    values = {"task": cfg.task, "out": str(iter_dir(cfg, k) / "generate"), "model": models.generator,
              "reflector": models.reflector if models.reflector != models.generator else None,
              "split": cfg.train_split, "limit": cfg.train_limit, **_data(cfg), "seed": cfg.seed + k,
              "cache": cfg.cache, **cfg.generate}
    return build(GenerateConfig, values, "evolve: generate")


def curate_config(cfg: EvolveConfig, k: int):
    folder = iter_dir(cfg, k)
    values = {"source": str(folder / "generate"), "out": str(folder / "curate"), "seed": cfg.seed,
              "cache": cfg.cache, **cfg.curate}
    return build(CurateConfig, values, "evolve: curate")


def train_config(cfg: EvolveConfig, k: int, models: Models):
    folder = iter_dir(cfg, k)
    # Setting II's stages are both trained from the current corrector's weights.
    values = {"data": str(folder / "curate"), "setting": cfg.setting, "out": str(folder / "train"),
              "model": models.generator, "seed": cfg.seed, **cfg.train}
    return build(TrainConfig, values, "evolve: train")


def evaluate_config(cfg: EvolveConfig, k: int, models: Models, split: str = "test") -> EvaluateConfig:
    """The evaluation of iteration k's models on the validation split ("validate") or the test split."""
    which = {"validation": (cfg.validation_split, cfg.validation_limit, "validate"),
             "test": (cfg.test_split, cfg.test_limit, "evaluate")}
    name, limit, folder = which[split]
    values = {"tasks": [cfg.task], "out": str(iter_dir(cfg, k) / folder), "generator": models.generator,
              "reflector": models.reflector if models.reflector != models.generator else None,
              # Each setting is evaluated in the format it trains: I, V (and the control) in one reply.
              "mode": SETTINGS.get(cfg.setting).obj.evaluation, "split": name,
              "limit": limit, **_data(cfg), "seed": cfg.seed, "cache": cfg.cache, **cfg.evaluate}
    return build(EvaluateConfig, values, "evolve: evaluate")


def validate_sections(cfg: EvolveConfig) -> None:
    """Build every stage's config once, so a bad setting fails now and not an hour into the loop."""
    if cfg.train_split == TEST_SPLIT or cfg.validation_split == TEST_SPLIT:
        raise InputError(f"evolve: the {TEST_SPLIT!r} split only reports; it cannot be the train_split or the "
                         f"validation_split")
    if len({cfg.train_split, cfg.validation_split, cfg.test_split}) < 3:
        raise InputError("evolve: train_split, validation_split and test_split must be three different splits")
    for section in ("generate", "evaluate"):
        fixed = sorted(set(getattr(cfg, section)) & {"split", "limit", "data", "data_split", "task", "tasks", "out"})
        if fixed:
            raise InputError(f"evolve: {section}: setting {fixed[0]!r} is the loop's own (use train_split, "
                             f"validation_split, test_split, *_limit, data at the top of the evolve section)")
    models = Models(generator=cfg.model, reflector=cfg.model)
    generate_config(cfg, 1, models)
    curate_config(cfg, 1)
    train_config(cfg, 1, models)
    evaluate_config(cfg, 1, models, "validation")
    evaluate_config(cfg, 1, models, "test")


# ------------------------------------------------------------------------- step stamps (no stale reuse)

def step_key(config: StageConfig, upstream: str = "") -> str:
    """Hash of a step's resolved settings (the cache location aside) chained with its input's hash."""
    settings = config.model_dump(mode="json", exclude={"cache", "no_cache", "resume"})
    return hashlib.sha256(json.dumps({"settings": settings, "upstream": upstream}, sort_keys=True).encode()).hexdigest()


def is_done(folder: Path, output: str, key: str) -> bool:
    """The step's output exists and was made by these settings. Outputs made by other settings (or
    before stamps existed) are moved aside to `<folder>.stale-<hash>`, so the step runs afresh."""
    if not folder.exists():
        return False
    stamp = folder / STAMP
    try:
        made_by = json.loads(stamp.read_text())["key"] if stamp.is_file() else None
    except (OSError, ValueError, KeyError, TypeError):
        made_by = None
    if made_by == key and (folder / output).exists():
        return True
    if not (folder / output).exists() and made_by in (None, key):
        return False  # an interrupted run of this very step: let it resume in place
    tag = made_by[:8] if made_by else "unstamped"
    aside, n = folder.with_name(f"{folder.name}.stale-{tag}"), 1
    while aside.exists():
        aside, n = folder.with_name(f"{folder.name}.stale-{tag}-{n}"), n + 1
    os.replace(folder, aside)
    why = "was made with other settings (or from other inputs)" if made_by else \
        "has no record of the settings that made it"
    console.print(f"[yellow]{folder} {why}: redoing the step; the old output is kept in {aside}[/yellow]")
    return False


def mark_done(folder: Path, key: str, config: StageConfig) -> None:
    write_json(folder / STAMP, {"key": key, "settings": config.model_dump(mode="json")})


# ------------------------------------------------------------------------------------ the loop

def plan(cfg: EvolveConfig) -> list[dict[str, Any]]:
    """Every step the loop would run, in order, with its output folder and the hash it will be stamped with
    (paths of later models are those training will write)."""
    validate_sections(cfg)
    models = Models(generator=cfg.model, reflector=cfg.model)
    start = hashlib.sha256(cfg.model.encode()).hexdigest()
    steps = []

    def evaluations(k: int, upstream: str, models: Models) -> None:
        for split, stage in (("validation", "validate"), ("test", "evaluate")):
            ecfg = evaluate_config(cfg, k, models, split)
            steps.append({"iteration": k, "stage": stage, "split": ecfg.split, "out": ecfg.out,
                          "models": models.model_dump(), "key": step_key(ecfg, upstream)})

    evaluations(0, start, models)
    upstream = start
    for k in range(1, cfg.iterations + 1):
        folder = iter_dir(cfg, k)
        trained = trained_models(cfg, folder / "train")
        gkey = step_key(generate_config(cfg, k, models), upstream)
        ckey = step_key(curate_config(cfg, k), gkey)
        tkey = step_key(train_config(cfg, k, models), ckey)
        steps += [
            {"iteration": k, "stage": "generate", "split": cfg.train_split, "out": str(folder / "generate"),
             "models": models.model_dump(), "key": gkey},
            {"iteration": k, "stage": "curate", "out": str(folder / "curate"),
             "models": {"episodes": str(folder / "generate" / "episodes.jsonl")}, "key": ckey},
            {"iteration": k, "stage": "train", "out": str(folder / "train"), "setting": cfg.setting,
             "from": models.generator, "key": tkey},
        ]
        evaluations(k, tkey, trained)
        models, upstream = trained, tkey
    return steps


def read_results(path: Path) -> dict:
    try:
        results = json.loads(path.read_text())
        results["metrics"]["overall"]
        return results
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: cannot read this evaluation's results ({type(exc).__name__}: {exc}); delete "
                         f"its folder to run the evaluation again") from exc


def metric_of(results: dict, name: Metric, path: Path | str = "results.json") -> tuple[float, list[float] | None]:
    try:
        overall = results["metrics"]["overall"]
        estimate = {"acc_t1": overall["acc_t1"], "acc_t2_oracle": overall["oracle"]["acc_t2"],
                    "acc_t2_free": (overall.get("oracle_free") or {}).get("acc_t2")}[name]
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path}: has no {name!r} in metrics.overall ({exc}); delete its folder to run the "
                         f"evaluation again") from exc
    if estimate is None:
        raise InputError(f"evolve: metric {name!r} was not measured (oracle-free evaluation is off?)")
    return estimate["value"], estimate.get("ci")


def run_evaluations(cfg: EvolveConfig, k: int, models: Models, keys: dict[str, str]) -> dict[str, dict]:
    """Validation (decides) and test (reports) scores of iteration k's models."""

    scores = {}
    for split in ("validation", "test"):
        ecfg = evaluate_config(cfg, k, models, split)
        out = Path(ecfg.out)
        key = keys[str(out)]
        if not is_done(out, "results.json", key):
            evaluate(ecfg)
            mark_done(out, key, ecfg)
        path = out / "results.json"
        score, ci = metric_of(read_results(path), cfg.metric, path)
        scores[split] = {"split": ecfg.split, "score": score, "ci": ci, "results": str(path)}
    return scores


def run_iteration(cfg: EvolveConfig, k: int, models: Models, keys: dict[str, str]) -> Models:
    """generate -> curate -> train on the current models; returns the trained models."""

    folder = iter_dir(cfg, k)
    gcfg = generate_config(cfg, k, models)
    if not is_done(Path(gcfg.out), "episodes.jsonl", keys[gcfg.out]):
        generate(gcfg)
        mark_done(Path(gcfg.out), keys[gcfg.out], gcfg)
    ccfg = curate_config(cfg, k)
    if not is_done(Path(ccfg.out), "curation.json", keys[ccfg.out]):
        try:
            curate(ccfg)
        except InputError as exc:  # e.g. no reflection corrected any answer: nothing to learn from
            raise NothingToLearn(str(exc)) from exc
        mark_done(Path(ccfg.out), keys[ccfg.out], ccfg)
    tcfg = train_config(cfg, k, models)
    out = Path(tcfg.out)
    setting = tcfg.spec
    if not is_done(out, setting.stage_dirs(out)[-1].relative_to(out) / "final_metrics.json", keys[tcfg.out]):
        missing = [s.dataset for s in setting.stages if not _has_rows(Path(ccfg.out) / s.dataset)]
        if missing:
            raise NothingToLearn(f"setting {cfg.setting} needs {', '.join(missing)}, which curation left empty "
                                 f"({Path(ccfg.out) / 'curation.json'})")
        # A stage finished before an interruption is kept: resume skips it and continues the rest.
        train(tcfg.model_copy(update={"resume": tcfg.resume or out.exists()}))
        mark_done(out, keys[tcfg.out], tcfg)
    return trained_models(cfg, folder / "train")


class NothingToLearn(Exception):
    """An iteration produced no training rows for the setting: the loop stops there, keeping its best."""


def _has_rows(dataset: Path) -> bool:
    train = dataset / "train.jsonl"
    return train.is_file() and train.stat().st_size > 0


def improved(history: list[dict], cfg: EvolveConfig) -> bool:
    """False once the last `patience` iterations all failed to beat the best (validation) score before them."""
    scores = [h["score"] for h in history]
    if len(scores) <= cfg.patience:
        return True
    best_before = max(scores[: -cfg.patience])
    return any(s > best_before + cfg.min_delta for s in scores[-cfg.patience:])


def check_splits(cfg: EvolveConfig) -> None:
    # Unknown tasks and missing splits fail before any work.
    task = get_task(cfg.task, data_path=cfg.data, data_split=(cfg.data_split or cfg.test_split) if cfg.data else None)
    for split in (cfg.train_split, cfg.validation_split, cfg.test_split):
        if split not in task.split_names:
            raise InputError(f"evolve: task {cfg.task!r} has no split {split!r}; splits: {', '.join(task.split_names)}"
                             + (f" (the data file {cfg.data} serves {task.data_split!r})" if cfg.data else ""))


def evolve(cfg: EvolveConfig, dry_run: bool = False) -> Path:
    steps = plan(cfg)
    if dry_run:
        print_plan(cfg, steps)
        return Path(cfg.out) / "plan.json"
    check_splits(cfg)
    keys = {step["out"]: step["key"] for step in steps}
    out = Path(cfg.out)
    with RunDir(out) as run:
        run.write_config({"evolve": cfg.model_dump()})
        write_json(out / "plan.json", steps)
    models = Models(generator=cfg.model, reflector=cfg.model)
    console.rule(f"[bold]iteration 0: the starting model on the {cfg.validation_split} and {cfg.test_split} splits")
    scores = run_evaluations(cfg, 0, models, keys)
    history = [{"iteration": 0, "models": models.model_dump(), "score": scores["validation"]["score"],
                "ci": scores["validation"]["ci"], **scores}]
    stopped = f"ran all {cfg.iterations} iterations"
    for k in range(1, cfg.iterations + 1):
        so_far = ", ".join(f"{h['score']:.3f}" for h in history)
        console.rule(f"[bold]iteration {k} of {cfg.iterations}: {cfg.metric} on {cfg.validation_split} so far {so_far}")
        try:
            trained = run_iteration(cfg, k, models, keys)
        except NothingToLearn as exc:
            stopped = f"iteration {k} had nothing to learn from: {exc}"
            console.print(f"[yellow]stopping:[/yellow] {stopped}")
            break
        scores = run_evaluations(cfg, k, trained, keys)
        folder = iter_dir(cfg, k)
        lineage = {"iteration": k, "from_models": models.model_dump(), "task": cfg.task,
                   "episodes": str(folder / "generate" / "episodes.jsonl"), "curated": str(folder / "curate"),
                   "setting": cfg.setting, "models": trained.model_dump(), "metric": cfg.metric,
                   "score": scores["validation"]["score"], "ci": scores["validation"]["ci"], **scores}
        write_json(folder / "lineage.json", lineage)
        history.append(lineage)
        models = trained
        if not improved(history, cfg):
            stopped = f"plateau: no gain above {cfg.min_delta} on {cfg.validation_split} in {cfg.patience} iteration(s)"
            break
    best = max(history, key=lambda h: h["score"])  # the first of equals: no change without a gain
    summary = {"metric": cfg.metric, "setting": cfg.setting, "task": cfg.task, "decided_on": cfg.validation_split,
               "reported_on": cfg.test_split, "history": history,
               "best": {"iteration": best["iteration"], "models": best["models"], "score": best["score"],
                        "ci": best["ci"], "test": best["test"]},
               "ship": ship(cfg, history, best), "stopped": stopped}
    with RunDir(out):
        write_json(out / "evolve.json", summary)
    report = write_evolve_report(cfg, history)
    print_history(summary)
    console.print(f"[green]report:[/green] {report}")
    return report


def ship(cfg: EvolveConfig, history: list[dict], best: dict) -> dict:
    """The model the loop would ship, and why, in words a reader can check against evolve.json: its
    validation gain over the starting model, paired by problem, with a 95% interval."""

    start = history[0]
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    gain = None
    if best["iteration"] == 0:
        why = (f"no trained model beat the starting model's {cfg.metric} on {cfg.validation_split} "
               f"({pct(start['score'])})")
    else:
        outcomes = [{s.episode.id: outcome(s) for s in read_samples(Path(h["validation"]["results"]).parent
                                                                    / "samples.jsonl")} for h in (start, best)]
        gain = paired_gain(*outcomes, cfg.metric, seed=cfg.seed)
        why = (f"highest {cfg.metric} on {cfg.validation_split}: {pct(best['score'])} at iteration "
               f"{best['iteration']} against {pct(start['score'])} for the starting model")
        if gain and gain["ci"]:
            low, high = gain["ci"]
            why += (f", a paired gain of {100 * gain['gain']:+.1f} points [{100 * low:+.1f}, {100 * high:+.1f}]"
                    + ("" if gain["shown"] else ": its 95% interval includes no gain, so it may be noise"))
    why += (f"; its {cfg.test_split} score {pct(best['test']['score'])} is reported, not used to choose")
    return {"iteration": best["iteration"], "models": best["models"], "why": why, "validation_gain": gain}


def write_evolve_report(cfg: EvolveConfig, history: list[dict]) -> Path:
    from reflectevo.report.html import write_report

    runs = [str(Path(h[split]["results"]).parent) for h in history for split in ("validation", "test")]
    runs += [str(iter_dir(cfg, h["iteration"]) / "generate") for h in history if h["iteration"] > 0]
    html, _ = write_report(runs, Path(cfg.out) / "report.html")
    return html


def print_history(summary: dict) -> None:
    from rich.table import Table

    table = Table("iteration", f"{summary['metric']} ({summary['decided_on']})", "95% CI",
                  f"{summary['reported_on']} (report only)", "generator", title=f"evolution ({summary['stopped']})")
    ci_text = lambda ci: f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"  # noqa: E731
    for h in summary["history"]:
        table.add_row(str(h["iteration"]), f"{h['score']:.3f}", ci_text(h.get("ci")),
                      f"{h['test']['score']:.3f} {ci_text(h['test'].get('ci'))}", h["models"]["generator"])
    console.print(table)
    console.print(f"ship: iteration {summary['ship']['iteration']} ({summary['ship']['models']['generator']}): "
                  f"{summary['ship']['why']}")


def print_plan(cfg: EvolveConfig, steps: list[dict]) -> None:
    from rich.table import Table

    table = Table("iter", "stage", "split", "models / data", "output",
                  title=f"plan: {cfg.task}, setting {cfg.setting}, up to {cfg.iterations} iterations, stop on a "
                        f"plateau of {cfg.metric} on {cfg.validation_split} (patience {cfg.patience}); "
                        f"{cfg.test_split} is reported only")
    for step in steps:
        detail = step.get("models") or {"from": step.get("from", "")}
        table.add_row(str(step["iteration"]), step["stage"], step.get("split", ""),
                      ", ".join(f"{k}={v}" for k, v in detail.items()), step["out"])
    console.print(table)
