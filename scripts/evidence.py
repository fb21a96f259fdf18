"""Evidence v2: does reflection learning beat the no-reflection controls on held-out problems?

    python scripts/evidence.py --model qwen2.5-coder-0.5b --task gsm8k --name qwen05-gsm8k \\
        --train 200 --validation 100 --test 200 --settings I,II,III,V --seeds 0,1,2

One generation of the untrained model on the train split feeds every setting (and the control); each
trained model is evaluated once on the validation split (which chooses the best setting and its second
iteration) and once on the test split (which only reports). Training goes seed by seed (the control and
every setting at seed 0, then at seed 1, ...), so a run cut short still compares them on equal seeds:

    OUT/base/generate, OUT/base/curate          the shared episodes and curated sets
    OUT/base/eval-<mode>-<split>                the untrained model, in each evaluation mode
    OUT/<setting>/seed-<s>/train                the trained model(s); with --no-second-iteration each merged
                                                model and its OpenVINO IR are deleted once evaluated (disk:
                                                10 GB per 1.5B model), the adapter kept (--keep-models: all)
    OUT/<setting>/seed-<s>/eval-<split>         its evaluations (the setting's own mode)
    OUT/iter2-<setting>/seed-<s>/...            the second iteration of the best setting (only where it
                                                beat the untrained model and the control on validation)

Every evaluation holds Acc@t1, oracle-gated and oracle-free Acc@t2 and the retry without reflection
(reflection value = Acc@t2 - retry). Gains are paired by problem against the untrained model in the
same mode, with a 95% interval from a hierarchical bootstrap (training seeds resampled, then problems),
so the interval covers training randomness as well as the choice of problems. The control (`--setting
control`: the same SFT on as many right trial-1 answers, no reflection) gets the same treatment, and a
setting is credited with reflection only where it beats the control beyond the interval *and* its
reflection value is above zero.

Everything is resumable: each step is skipped when its output exists, and generation is cached.
Results go to docs/evidence/<name>/ (command, evidence.json, evidence_run.md, evidence.png), and so,
as each lands, does what a resumed run needs when the run folder is gone (a new machine): every
evaluation's per-problem outcomes (`<step>/outcomes.jsonl`, beside its results.json), the shared
generation's episodes (`base/generate/episodes.jsonl.gz`) and the wall time per step (timing.json).
Commit that folder and the same command continues on another machine after the last finished step.
The run's generation cache is kept there too (`cache/part-NNNN.jsonl.gz`, the completions added since the
last part), so the step in flight resumes from its last cached batch rather than from its start;
`--report-only` keeps the cache as well, from another shell while the run goes on, which is how a long
step's partial work is committed before a session ends. (A machine whose engine computes in another
precision has other cache keys and regenerates.) A rerun under a new name that changes only training
(`--max-length`, say) names the earlier run with `--cache-from NAME`: it restores that run's kept cache
as well, so its generation and the untrained model's evaluations come from the cache, and a retrained
model whose weights come out identical (the control, where no row reached the old limit) is evaluated
from it too; it keeps only its own new completions.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import shlex
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from reflectevo.backends.base import Completion
from reflectevo.backends.openvino_export import remove_exports
from reflectevo.backends.cache import GenerationCache
from reflectevo.config import EvaluateConfig, GenerateConfig, build
from reflectevo.errors import InputError
from reflectevo.records import read_samples
from reflectevo.report.metrics import LEVEL, METRIC_OF, Outcome
from reflectevo.runs import folder_bytes, write_atomic
from reflectevo.stages.curate import CurateConfig, curate
from reflectevo.stages.evaluate import evaluate, outcome
from reflectevo.stages.generate import generate
from reflectevo.training import TrainConfig, train
from reflectevo.training.config import SETTINGS
from reflectevo.training.metrics import METRICS as TRAINING_LOG
from reflectevo.training.run import FINAL

METRICS = ("acc_t1", "acc_t2_oracle", "acc_t2_free", "acc_t2_retry")


def mode_of(setting: str) -> str:
    return SETTINGS.get(setting).obj.evaluation  # each setting is evaluated in the format it trains


def models_of(setting: str, train_dir: Path) -> dict:
    models = SETTINGS.get(setting).obj.models(train_dir)
    return {**models, "reflector": None if models["reflector"] == models["generator"] else models["reflector"]}


def drop_models(models: dict) -> int:
    """Delete trained models no later step reads, once evaluated: the merged folders (6.7 GB each for the
    1.5B model) and their OpenVINO IRs (3.4 GB each). The adapters, logs and results stay: an adapter
    folder loads as a model by path (its adapter_config.json names the base). Returns the bytes freed."""
    freed = 0
    for folder in {Path(m) for m in models.values() if m}:
        if folder.is_dir():
            freed += remove_exports(folder)
            freed += folder_bytes(folder)
            shutil.rmtree(folder)
    return freed


# ------------------------------------------------------------------------------------------ steps

def run_generate(args, out: Path, models: dict, seed: int) -> Path:
    keep_episodes(out)
    if not (out / "episodes.jsonl").is_file():
        generate(build(GenerateConfig, {
            "task": args.task, "out": str(out), "model": models["generator"], "reflector": models.get("reflector"),
            "engine": args.engine, "split": "train", "limit": args.train, "seed": seed, "cache": args.cache,
            "num_instructions": args.instructions, "samples": args.samples, "max_tokens": args.max_tokens,
            "reflection_max_tokens": args.reflection_max_tokens or args.max_tokens}, "evidence"))
        keep_episodes(out)
    return out


def run_curate(args, source: Path, out: Path) -> Path | None:
    """The curated folder, or None where no reflection corrected anything (nothing to curate)."""
    if not (out / "curation.json").is_file():
        try:
            curate(CurateConfig(source=str(source), out=str(out), validation=0.1, seed=0))
        except InputError as exc:
            if "curation produced no rows" not in str(exc):
                raise
            return None
    return out


def datasets_of(setting: str) -> list[str]:
    return [stage.dataset for stage in SETTINGS.get(setting).obj.stages]


def run_train(args, setting: str, data: Path, out: Path, base_model: str, seed: int) -> Path | None:
    """The trained folder, or None where curation left the setting's data empty."""
    stages = SETTINGS.get(setting).obj.stages
    if data is None:
        return None
    for stage in stages:
        rows = data / stage.dataset / "train.jsonl"
        if not rows.is_file() or rows.stat().st_size == 0:
            return None
    finals = [folder / FINAL for folder in SETTINGS.get(setting).obj.stage_dirs(out)]
    if not all(f.is_file() for f in finals):
        kind = stages[0].trainer
        lr = args.lr / 10 if kind == "dpo" else args.lr  # DPO at the SFT rate hurt badly (docs/evidence.md, run 3)
        # Setting V runs a fixed number of steps, its replies sampled at the budget they are evaluated at.
        rl = {"max_steps": args.rl_steps, "max_completion_length": args.rl_max_tokens or args.max_tokens}
        train(TrainConfig(data=str(data), setting=setting, out=str(out), model=base_model, seed=seed,
                          learning_rate=lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                          gradient_checkpointing=args.gradient_checkpointing, logging_steps=5, resume=out.exists(),
                          # a checkpoint (~120 MB of LoRA and optimizer state) every 5 steps: a 1.5B stage
                          # runs ~3.5 min a step here, and a sitting cut short then loses minutes, not an hour
                          save_steps=5,
                          **(rl if kind == "grpo" else {})))
    keep_training_logs(out)
    return out


def run_evaluate(args, out: Path, models: dict, mode: str, split: str) -> Path:
    if not evaluated(out):
        evaluate(build(EvaluateConfig, {
            "tasks": [args.task], "out": str(out), "generator": models["generator"], "reflector": models.get("reflector"),
            "mode": mode, "engine": args.engine, "split": split,
            "limit": args.validation if split == "validation" else args.test, "seed": 0, "cache": args.cache,
            "max_tokens": args.max_tokens, "reflection_max_tokens": args.reflection_max_tokens or args.max_tokens,
            "self_check_max_tokens": 64, "bootstrap": 2000}, "evidence"))
        outcomes(out)  # kept in docs as soon as it exists
    return out


# ------------------------------------------------------------------------------------------ statistics

# The run folder (models, samples, cache) lives outside git and is lost with the machine; what the
# statistics need is kept in docs/evidence/<name>/ as it lands: each evaluation's per-problem outcomes
# and the shared generation's episodes. A run on a new machine restores those and resumes after them.
KEPT: dict[str, Path] = {}  # "out": the run folder, "docs": its twin docs/evidence/<name>/


def kept(folder: Path) -> Path:
    return KEPT["docs"] / folder.relative_to(KEPT["out"])


def evaluated(folder: Path) -> bool:
    return (folder / "samples.jsonl").is_file() or (kept(folder) / "outcomes.jsonl").is_file()


def eval_folder(out: Path, setting: str, seed: int, split: str) -> Path:
    return out / setting / f"seed-{seed}" / f"eval-{split}"


def evaluated_seeds(out: Path, setting: str, split: str, seeds: list[int]) -> list[Path]:
    """The evaluated trained models of a setting, in seed order, read from the run folder or docs: a
    resumed run's partial table then holds the seeds an earlier sitting finished beyond this one's."""
    folders = (eval_folder(out, setting, seed, split) for seed in seeds)
    return [f for f in folders if evaluated(f)]


def not_yet_evaluated(out: Path, settings: list[str], seeds: list[int], sizes: dict[str, int]) -> list[str]:
    """The trainable (setting, seed) pairs without a test evaluation yet, seed-major: a summary written
    while these remain (--report-only beside a running sitting, or a sitting cut short) says so, so a
    committed table is never read as the finished run."""
    return [f"{s} seed {seed}" for seed in seeds for s in settings
            if sizes.get(datasets_of(s)[0], 0) and not evaluated(eval_folder(out, s, seed, "test"))]


def outcomes(folder: Path) -> dict:
    saved = kept(folder) / "outcomes.jsonl"
    if not (folder / "samples.jsonl").is_file():
        return {row.pop("id"): Outcome(**row) for row in map(json.loads, saved.read_text().splitlines())}
    found = {s.episode.id: outcome(s) for s in read_samples(folder / "samples.jsonl")}
    if not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text("".join(json.dumps({"id": i, **asdict(o)}) + "\n" for i, o in found.items()))
        if (folder / "results.json").is_file():
            shutil.copy(folder / "results.json", saved.parent / "results.json")
    return found


def keep_training_logs(train_dir: Path) -> None:
    """A trained model's curves (metrics.jsonl, final_metrics.json, loss.png, rewards.png) are kept in docs;
    its weights are not (they are rebuilt by rerunning the step)."""
    for final in train_dir.rglob(FINAL):  # one per trained stage (setting II has two)
        for f in final.parent.iterdir():
            if f.is_file() and (f.suffix == ".png" or f.name in (FINAL, TRAINING_LOG)):
                saved = kept(f)
                saved.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(f, saved)


def keep_curation(data: Path) -> dict:
    """The curation summary (rows of every set) of the shared generation, kept in docs so that a summary on
    a new machine (--report-only) still names the rows each setting trained on."""
    current = data / "curation.json"
    saved = kept(current)
    if current.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, saved)
    return json.loads(saved.read_text()) if saved.is_file() else {}


def keep_episodes(folder: Path) -> None:
    """Restore a generation's episodes from docs (gzip) when the run folder lost them, or keep them there."""
    episodes, saved = folder / "episodes.jsonl", kept(folder) / "episodes.jsonl.gz"
    if not episodes.is_file() and saved.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        episodes.write_bytes(gzip.decompress(saved.read_bytes()))
    elif episodes.is_file() and not saved.is_file():
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_bytes(gzip.compress(episodes.read_bytes(), mtime=0))


def cache_parts(own: bool = False) -> list[Path]:
    """The run's kept cache parts, then (unless `own`) those of the earlier runs named by --cache-from."""
    folders = [KEPT["docs"], *([] if own else KEPT.get("cache_from", []))]
    return [part for folder in folders for part in sorted((folder / "cache").glob("part-*.jsonl.gz"))]


def read_part(part: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.decompress(part.read_bytes()).decode().splitlines()]


def restore_cache(path: Path) -> int:
    """Put the completions kept in docs back into the run's cache (on a new machine); how many were new."""
    parts = cache_parts()
    if not parts:
        return 0
    cache = GenerationCache(path)
    try:
        before = cache.count()
        for part in parts:
            by_model: dict[str, list] = {}
            for r in read_part(part):
                by_model.setdefault(r["model"], []).append(
                    (r["key"], Completion(text=r["text"], tokens=r["tokens"], finish_reason=r["finish_reason"])))
            for model, items in by_model.items():
                cache.put_many(items, model)
        return cache.count() - before
    finally:
        cache.close()


@functools.cache
def _part_keys(part: Path) -> frozenset:
    return frozenset(r["key"] for r in read_part(part))  # a part never changes once written (whole or absent)


def keep_cache(path: Path) -> int:
    """Keep in docs, as one new part, the cached completions that no kept part holds; how many."""
    if not path.is_file():
        return 0
    parts = cache_parts()
    known = set().union(*(_part_keys(part) for part in parts))
    cache = GenerationCache(path)
    try:
        new = [{"key": key, "text": c.text, "tokens": c.tokens, "finish_reason": c.finish_reason, "model": model}
               for key, c, model in cache.items() if key not in known]
    finally:
        cache.close()
    if new:
        own = cache_parts(own=True)  # numbered among the run's own parts; an earlier run's stay where they are
        number = int(own[-1].name.split("-")[1].split(".")[0]) + 1 if own else 1
        write_atomic(KEPT["docs"] / "cache" / f"part-{number:04d}.jsonl.gz",  # a part is whole or absent
                     gzip.compress("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new).encode(), mtime=0))
    return len(new)


def hierarchical_gain(base: dict, trained: list[dict], metric: str, resamples: int = 4000, seed: int = 0) -> dict | None:
    """trained - base, paired by problem, averaged over training seeds; the interval resamples seeds,
    then problems, so it covers training randomness and the choice of problems."""
    get = METRIC_OF[metric]
    ids = sorted(set(base).intersection(*trained))
    if not ids or any(get(base[i]) is None or get(t[i]) is None for t in trained for i in ids):
        return None
    diff = np.array([[float(get(t[i])) - float(get(base[i])) for i in ids] for t in trained])  # (seeds, problems)
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, len(trained), size=(resamples, len(trained)))
    problems = rng.integers(0, len(ids), size=(resamples, len(ids)))
    means = np.array([diff[s][:, p].mean() for s, p in zip(seeds, problems)])
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    value = float(diff.mean())
    return {"gain": value, "ci": [float(min(low, value)), float(max(high, value))], "shown": bool(low > 0),
            "per_seed": [float(d.mean()) for d in diff], "n": len(ids), "seeds": len(trained),
            "before": float(np.mean([float(get(base[i])) for i in ids])),
            "after": float(np.mean([[float(get(t[i])) for i in ids] for t in trained]))}


def reflection_value(trained: list[dict], resamples: int = 4000, seed: int = 0) -> dict | None:
    """Acc@t2 - Acc@t2 of the retry without reflection, of the trained models, hierarchical as above."""
    ids = sorted(set(trained[0]).intersection(*trained))
    if any(t[i].t2_retry is None for t in trained for i in ids):
        return None
    diff = np.array([[float(t[i].t2_oracle) - float(t[i].t2_retry) for i in ids] for t in trained])
    rng = np.random.default_rng(seed)
    means = np.array([diff[s][:, p].mean() for s, p in zip(rng.integers(0, len(trained), (resamples, len(trained))),
                                                               rng.integers(0, len(ids), (resamples, len(ids))))])
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"value": float(diff.mean()), "ci": [float(low), float(high)], "shown": bool(low > 0)}


def flips(folder_outcomes: list[dict]) -> dict:
    w2r = [sum((not o.t1) and o.t2_oracle for o in t.values()) for t in folder_outcomes]
    r2w = [sum(o.t1 and (o.t2_free is False) for o in t.values()) for t in folder_outcomes]
    return {"wrong_to_right_oracle": w2r, "right_to_wrong_free": r2w}


def summarise(label: str, setting: str, base_dir: Path, folders: list[Path], rows: dict, seconds: float,
              control: list[dict] | None = None) -> dict:
    base, trained = outcomes(base_dir), [outcomes(f) for f in folders]
    row = {"label": label, "setting": setting, "models": [str(f) for f in folders], "rows": rows,
           "wall_minutes": seconds / 60, **{m: hierarchical_gain(base, trained, m) for m in METRICS},
           "reflection_value": reflection_value(trained), "flips": flips(trained)}
    if control:
        # Against the control, paired by problem: does the setting beat plain self-training? (Both are
        # held-out Acc@t2 of the trained system; the control answers in one reply like setting I.)
        row["vs_control"] = hierarchical_gain_between(control, trained, "acc_t2_oracle")
    return row


def hierarchical_gain_between(first: list[dict], second: list[dict], metric: str, resamples: int = 4000) -> dict | None:
    """mean(second) - mean(first) per problem, seeds of each group resampled, then problems."""
    get = METRIC_OF[metric]
    ids = sorted(set(first[0]).intersection(*first, *second))
    a = np.array([[float(get(t[i])) for i in ids] for t in first])
    b = np.array([[float(get(t[i])) for i in ids] for t in second])
    rng = np.random.default_rng(0)
    means = []
    for _ in range(resamples):
        p = rng.integers(0, len(ids), len(ids))
        means.append(b[rng.integers(0, len(b), len(b))][:, p].mean() - a[rng.integers(0, len(a), len(a))][:, p].mean())
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    value = float(b.mean() - a.mean())
    return {"gain": value, "ci": [float(low), float(high)], "shown": bool(low > 0)}


def choose_second_iteration(validation: dict[str, tuple[dict, list[dict]]], control: list[dict]) -> tuple[str | None, str | None]:
    """The setting to iterate, and why (or why none): the one with the largest validation Acc@t2 gain
    over the untrained model, iterated only where it beat the untrained model and the control there.
    A setting that plain self-training matches has shown nothing a second round could build on.
    `validation`: per setting, (the untrained model's outcomes in its mode, each seed's outcomes)."""
    best, best_gain = None, None
    for setting, (base, trained) in validation.items():
        gain = hierarchical_gain(base, trained, "acc_t2_oracle") if trained else None
        if gain and (best_gain is None or gain["gain"] > best_gain):
            best, best_gain = setting, gain["gain"]
    if best is None:
        return None, None
    if best_gain <= 0:
        return None, (f"no second iteration: the best setting on validation, {best}, did not beat the untrained "
                      f"model there (Acc@t2 gain {100 * best_gain:+.1f} points)")
    vs_control = hierarchical_gain_between(control, validation[best][1], "acc_t2_oracle")["gain"] if control else None
    if vs_control is not None and vs_control <= 0:
        return None, (f"no second iteration: the best setting on validation, {best}, did not beat the control "
                      f"there (Acc@t2 {100 * vs_control:+.1f} points against it)")
    return best, (f"second iteration: setting {best}, the best on validation (Acc@t2 gain {100 * best_gain:+.1f} "
                  f"points over the untrained model" + (f", {100 * vs_control:+.1f} over the control)"
                                                       if vs_control is not None else ")"))


# ------------------------------------------------------------------------------------------ output

def pct(e: dict | None, key: str = "gain") -> str:
    if not e:
        return "–"
    low, high = e["ci"]
    return f"{100 * e[key]:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def write_outputs(args, rows: list[dict], notes: list[str], seconds: float, docs: Path) -> None:
    docs.mkdir(parents=True, exist_ok=True)
    if not args.report_only or not (docs / "command.txt").is_file():
        command = [a for a in [sys.executable.split("/")[-1], *sys.argv] if a != "--report-only"]
        (docs / "command.txt").write_text(" ".join(shlex.quote(a) for a in command) + "\n")
    (docs / "evidence.json").write_text(json.dumps({"args": vars(args), "rows": rows, "notes": notes,
                                                    "seconds": seconds}, indent=2))
    lines = [f"# Evidence run `{args.name}` (written by scripts/evidence.py)", "",
             f"Command: `{(docs / 'command.txt').read_text().strip()}` ({seconds / 3600:.1f} h on this machine so far). "
             f"Model `{args.model}`, task `{args.task}`: generation on {args.train} train problems, decisions on "
             f"{args.validation} validation problems, the numbers below on {args.test} **test** problems.", "",
             "Gains: trained minus untrained on the same problems (same evaluation mode), averaged over the training "
             "seeds; 95% interval by hierarchical bootstrap (seeds, then problems). Reflection value: Acc@t2 minus "
             "the retry without reflection, of the trained models. vs control: Acc@t2 minus the control's.", "",
             "| model | seeds | rows | Acc@t1 | Acc@t2 oracle-gated | Acc@t2 oracle-free | reflection value | vs control | "
             "w→r per seed | wall |", "|---|---:|---|---|---|---|---|---|---|---:|"]
    for r in rows:
        used = "+".join(str(r["rows"].get(d, 0)) for d in datasets_of(r["setting"]))
        t2 = r["acc_t2_oracle"]
        t2_text = f"{100 * t2['before']:.1f} → {100 * t2['after']:.1f} ({pct(t2)})" if t2 else "–"
        lines.append(f"| {r['label']} | {len(r['models'])} | {used} | {pct(r['acc_t1'])} | {t2_text} | "
                     f"{pct(r['acc_t2_free'])} | {pct(r['reflection_value'], 'value')} | {pct(r.get('vs_control'))} | "
                     f"{r['flips']['wrong_to_right_oracle']} | {r['wall_minutes']:.0f} min |")
    lines += ["", *[f"- {n}" for n in notes], "", "![gains](evidence.png)", ""]
    (docs / "evidence_run.md").write_text("\n".join(lines) + "\n")
    if rows:
        plot(rows, docs / "evidence.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["acc_t2_oracle"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(shown)), 3.8))
    x = np.arange(len(shown))
    for k, (key, label, color) in enumerate((("acc_t2_oracle", "Acc@t2 gain", "tab:green"),
                                             ("reflection_value", "reflection value", "tab:purple"))):
        values = [r[key]["gain" if key != "reflection_value" else "value"] * 100 if r[key] else 0 for r in shown]
        errors = np.array([[100 * ((r[key]["gain" if key != "reflection_value" else "value"]) - r[key]["ci"][0]),
                            100 * (r[key]["ci"][1] - (r[key]["gain" if key != "reflection_value" else "value"]))]
                           if r[key] else [0, 0] for r in shown]).T
        bars = ax.bar(x + (k - 0.5) * 0.38, values, 0.38, yerr=errors, capsize=3, label=label, color=color)
        for bar, r in zip(bars, shown):
            if r["setting"] == "control":
                bar.set_hatch("//")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [r["label"].replace(", ", "\n") for r in shown], fontsize=8)
    ax.set_ylabel("points (test split)")
    ax.set_title("trained minus untrained (Acc@t2) and Acc@t2 minus retry, 95% CI over seeds and problems")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="docs/evidence/<name>/ gets the results")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--task", default="gsm8k")
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--out", default=None, help="run folder [runs/evidence/<name>]")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=256, help="trial 1, trial 2 and the retry")
    parser.add_argument("--reflection-max-tokens", type=int, default=None, help="reflections [--max-tokens]")
    parser.add_argument("--instructions", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--settings", default="I,II,III,V")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=1e-4, help="LoRA rate of SFT (DPO: a tenth)")
    parser.add_argument("--rl-steps", type=int, default=30, help="GRPO steps of setting V")
    parser.add_argument("--rl-max-tokens", type=int, default=None,
                        help="setting V: tokens per sampled reply [--max-tokens, the budget it is evaluated at]")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="trade compute for activation memory (the 1.5B model's LoRA SFT at batch 4 and 1,024 "
                             "tokens was killed for memory at 24 GiB without it)")
    parser.add_argument("--no-second-iteration", action="store_true")
    parser.add_argument("--keep-models", action="store_true",
                        help="keep each trained model's merged folder and OpenVINO IR after its evaluations "
                             "(without a second iteration they are deleted; the adapters stay)")
    parser.add_argument("--cache", default=None, help="generation cache [OUT/generations.sqlite]")
    parser.add_argument("--cache-from", default="",
                        help="comma-separated earlier runs (docs/evidence/NAME) whose kept generation cache this "
                             "run restores too: a rerun that changes only training reuses their generation and "
                             "untrained evaluations, and keeps only its own new completions")
    parser.add_argument("--report-only", action="store_true",
                        help="summarise what is done and keep the cache's new completions in docs, run nothing")
    args = parser.parse_args()

    started = time.time()
    out = Path(args.out or f"runs/evidence/{args.name}")
    docs = Path("docs/evidence") / args.name
    KEPT.update(out=out, docs=docs,
                cache_from=[Path("docs/evidence") / name for name in args.cache_from.split(",") if name])
    if absent := [str(f) for f in KEPT["cache_from"] if not (f / "cache").is_dir()]:
        raise SystemExit(f"--cache-from: no kept cache in {', '.join(absent)}")
    args.cache = args.cache or str(out / "generations.sqlite")  # the run's own: its whole content is kept
    cache = Path(args.cache)
    if not args.report_only and (restored := restore_cache(cache)):
        print(f"restored {restored} completions into {cache} from "
              f"{', '.join(str(f / 'cache') for f in [docs, *KEPT['cache_from']])}")
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = args.settings.split(",")
    base_model = {"generator": args.model, "reflector": None}
    gen = out / "base" / "generate"
    data = out / "base" / "curate"
    rows, notes = [], []
    # Wall time per step, kept across invocations (a resumed run adds to what the earlier ones spent).
    timing_file = docs / "timing.json"  # kept with the results: a resumed run on a new machine adds to it
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}

    def add_time(key, seconds):
        if args.report_only:  # a summary changes neither the wall times nor the recorded command
            return
        timing[key] = timing.get(key, 0) + seconds
        timing_file.parent.mkdir(parents=True, exist_ok=True)
        timing_file.write_text(json.dumps(timing, indent=1))  # at once: a killed run keeps what it spent

    def step(key, fn):
        if args.report_only:
            return None
        t0 = time.time()
        try:
            return fn()
        finally:  # a failed or interrupted step keeps what it generated too
            add_time(key, time.time() - t0)
            keep_cache(cache)

    if args.report_only:
        keep_cache(cache)

    step("generate", lambda: run_generate(args, gen, base_model, seed=1))
    step("curate", lambda: run_curate(args, gen, data))
    base_eval = {}
    for mode in {mode_of(s) for s in settings + ["control"]}:
        for split in ("validation", "test"):
            folder = out / "base" / f"eval-{mode}-{split}"
            step(f"base-{mode}", lambda: run_evaluate(args, folder, base_model, mode, split))
            base_eval[(mode, split)] = folder
    curation = keep_curation(data)
    sizes = {name: d["train"] for name, d in curation.get("datasets", {}).items()}

    def evaluations(setting: str, split: str) -> list[Path]:
        return evaluated_seeds(out, setting, split, seeds)

    def summary_rows() -> list[dict]:
        control_test = [outcomes(f) for f in evaluations("control", "test")]
        done = []
        for setting in ["control"] + settings:
            folders = evaluations(setting, "test")
            if not folders:
                continue
            wall = sum(v for k, v in timing.items() if k.startswith(f"{setting}-"))
            done.append(summarise(f"setting {setting}" if setting != "control" else "control (right trial-1 answers)",
                                  setting, base_eval[(mode_of(setting), "test")], folders,
                                  {d: sizes.get(d, 0) for d in datasets_of(setting)}, wall,
                                  control=control_test if setting != "control" else None))
        return done

    def report(last: str) -> None:
        write_outputs(args, summary_rows(), notes + [f"(partial: done up to {last})"],
                      total_seconds(), docs)

    def total_seconds() -> float:
        return sum(v for k, v in timing.items() if not (k.split("-")[-1].isdigit()))

    # Seed-major: a run cut short has every setting (and the control) at the seeds it reached, so its
    # partial table already pairs each setting with the control on the same training seeds.
    untrainable: set[str] = set()
    for seed in seeds:
        for setting in ["control"] + settings:
            if setting in untrainable:
                continue
            t0 = time.time()
            train_dir = out / setting / f"seed-{seed}" / "train"
            evals = {split: eval_folder(out, setting, seed, split) for split in ("validation", "test")}
            finished = all(map(evaluated, evals.values()))
            done = step(f"train-{setting}", lambda: run_train(args, setting, data, train_dir, args.model, seed)) \
                if not (args.report_only or finished) else (train_dir if train_dir.exists() or finished else None)
            if done is None and not args.report_only:
                notes.append(f"setting {setting}: not trained, curation left {datasets_of(setting)[0]} empty")
                untrainable.add(setting)
                continue
            for split, folder in evals.items():
                step(f"eval-{setting}", lambda: run_evaluate(args, folder, models_of(setting, train_dir), mode_of(setting), split))
            add_time(f"{setting}-{seed}", time.time() - t0)
            if args.no_second_iteration and not (args.keep_models or args.report_only) \
                    and all(map(evaluated, evals.values())):
                drop_models(models_of(setting, train_dir))  # disk: a 1.5B II seed leaves 20 GB otherwise
            report(f"{setting} at seed {seed}")  # partial results land as each trained model is evaluated

    rows = summary_rows()
    if missing := not_yet_evaluated(out, ["control"] + settings, seeds, sizes):
        notes.append(f"(partial: not yet evaluated on test: {', '.join(missing)})")

    # The second iteration of the best setting, chosen on validation (never on test).
    if not args.no_second_iteration:
        best, note = choose_second_iteration(
            {setting: (outcomes(base_eval[(mode_of(setting), "validation")]), [outcomes(f) for f in folders])
             for setting in settings if (folders := evaluations(setting, "validation"))},
            [outcomes(f) for f in evaluations("control", "validation")])
        if note:
            notes.append(note)
        if best is not None:
            folders = []
            for seed in seeds:
                first = out / best / f"seed-{seed}" / "train"
                step("iter2", lambda: run_train(args, best, data, first, args.model, seed))  # lost with a machine
                models = models_of(best, first)
                it2 = out / f"iter2-{best}" / f"seed-{seed}"
                t0 = time.time()
                step("iter2", lambda: run_generate(args, it2 / "generate", models, seed=2))
                curated = step("iter2", lambda: run_curate(args, it2 / "generate", it2 / "curate"))
                done = step("iter2", lambda: run_train(args, best, curated, it2 / "train", models["generator"], seed))
                if done is None and not args.report_only:
                    notes.append(f"second iteration, seed {seed}: curation left nothing to train on")
                    continue
                step("iter2", lambda: run_evaluate(args, it2 / "eval-test", models_of(best, it2 / "train"),
                                                   mode_of(best), "test"))
                if evaluated(it2 / "eval-test"):
                    folders.append(it2 / "eval-test")
                add_time(f"iter2-{seed}", time.time() - t0)
            if folders:
                rows.append(summarise(f"setting {best}, iteration 2", best, base_eval[(mode_of(best), "test")],
                                      folders, {}, sum(v for k, v in timing.items() if k.startswith("iter2-"))))
    write_outputs(args, rows, notes, total_seconds(), docs)
    for r in rows:
        print(r["label"], pct(r["acc_t2_oracle"]), "reflection value", pct(r["reflection_value"], "value"),
              "vs control", pct(r.get("vs_control")))


if __name__ == "__main__":
    main()
