"""Does reflection learning help? Settings I-IV side by side, and a second iteration, on held-out problems.

    python scripts/evidence.py --out runs/evidence --docs docs/evidence/NAME   # then read its evidence_run.md

For each setting, `reflectevo evolve` runs from the untrained default model: iteration 0 evaluates the
untrained model on the test split (in the setting's own test-time mode), iteration k generates on the
train split, curates, trains (LoRA) and evaluates again. Generation is cached by content, so the
untrained model's episodes are generated once and shared by all settings. The gain of a trained model
is its held-out Acc@t2 minus the untrained model's on the same problems, with a paired bootstrap 95% CI
(problems resampled; both models' outcomes of a problem move together). A gain counts as shown only if
the whole interval lies above zero.

The control asks whether a gain is due to reflection at all: it repeats setting I's LoRA rounds with the
same settings and as many rows, made of the model's own *right trial-1 answers* (no failure, no feedback,
no reflection), and evaluates on the same test problems. Round k takes its rows from the loop's
iteration-k generation, so the control costs two trainings and two evaluations, no generation.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from reflectevo.config import build
from reflectevo.report import metrics
from reflectevo.stages.curate import write_dataset
from reflectevo.stages.evaluate import evaluate, outcome, read_samples
from reflectevo.stages.evolve import EvolveConfig, Models, evaluate_config, evolve, train_config, trained_models
from reflectevo.training import train
from reflectevo.training.config import STAGES

SETTINGS = ("I", "II", "III", "IV")


def loop_config(args, setting: str, iterations: int) -> EvolveConfig:
    tokens = {"max_tokens": args.max_tokens, "reflection_max_tokens": args.max_tokens}
    return build(EvolveConfig, {
        "task": args.task, "out": str(Path(args.out) / f"setting_{setting}"), "setting": setting,
        "iterations": iterations, "patience": iterations, "train_limit": args.train, "test_limit": args.test,
        "cache": args.cache,
        "generate": {"num_instructions": args.instructions, "samples": args.samples, **tokens},
        "curate": {"validation": 0.1},
        # DPO takes a tenth of the SFT rate, the library's own default ratio (the same rate hurt run 3).
        "train": {"epochs": args.epochs, "learning_rate": args.lr / 10 if setting in ("III", "IV") else args.lr,
                  "batch_size": args.batch_size, "max_length": 512, "logging_steps": 5},
        "evaluate": {**tokens, "self_check_max_tokens": 16, "bootstrap": 2000},
    }, "evidence")


def control_rows(loop: Path, k: int) -> dict[str, list[dict]]:
    """As many rows as setting I trained on in iteration k, made of that generation's right trial-1 answers."""
    curated = loop / f"iter_{k}" / "curate" / "sft_one_stage"
    sizes = {split: sum(1 for _ in open(curated / f"{split}.jsonl")) for split in ("train", "validation")}
    episodes = [json.loads(line) for line in open(loop / f"iter_{k}" / "generate" / "episodes.jsonl")]
    rows = [{"prompt": e["trial1"]["messages"],
             "completion": [{"role": "assistant", "content": e["trial1"]["response"]}],
             "task": e["task"], "episode_id": e["id"]} for e in episodes if e["trial1"]["verdict"]["correct"]]
    return {"train": rows[: sizes["train"]], "validation": rows[sizes["train"]: sizes["train"] + sizes["validation"]]}


def run_control(loop_cfg: EvolveConfig, out: Path) -> list[dict]:
    """Setting I's LoRA rounds on right trial-1 answers; one row of gains per round."""
    loop, rows = Path(loop_cfg.out), []
    models = Models(generator=loop_cfg.model, reflector=loop_cfg.model)
    k = 1
    while (loop / f"iter_{k}" / "train" / "final_metrics.json").is_file():
        data = out / f"iter_{k}" / "data"
        if not (data / "sft_one_stage" / "train.jsonl").is_file():
            (data / "sft_one_stage").mkdir(parents=True, exist_ok=True)
            write_dataset(data / "sft_one_stage", "sft_one_stage", control_rows(loop, k))
        sizes = {"sft_one_stage": sum(1 for _ in open(data / "sft_one_stage" / "train.jsonl"))}
        tcfg = train_config(loop_cfg, k, models).model_copy(update={"data": str(data), "out": str(out / f"iter_{k}" / "train")})
        if not (Path(tcfg.out) / "final_metrics.json").is_file():
            train(tcfg)
        models = trained_models(loop_cfg, Path(tcfg.out))
        ecfg = evaluate_config(loop_cfg, k, models).model_copy(update={"out": str(out / f"iter_{k}" / "evaluate")})
        if not (Path(ecfg.out) / "samples.jsonl").is_file():
            evaluate(ecfg)
        gain = paired_gain(loop / "iter_0" / "evaluate", Path(ecfg.out))
        rows.append({"label": f"control (right trial-1 answers), round {k}", "setting": "I", "control": True,
                     **gain, "rows": sizes})
        k += 1
    return rows


def paired_gain(base_dir: Path, trained_dir: Path, resamples: int = 5000, seed: int = 0) -> dict:
    """Acc@t1, Acc@t2 (oracle-gated) and oracle-free: trained minus untrained, paired by problem."""
    base = {s.episode.id: outcome(s) for s in read_samples(base_dir / "samples.jsonl")}
    trained = {s.episode.id: outcome(s) for s in read_samples(trained_dir / "samples.jsonl")}
    result = {"n": len(base.keys() & trained.keys())}
    for name in ("acc_t1", "acc_t2_oracle", "acc_t2_free"):
        gain = metrics.paired_gain(base, trained, name, resamples, seed)
        if gain is not None:
            result[name] = {"untrained": gain["before"], "trained": gain["after"], "gain": gain["gain"],
                            "ci": gain["ci"], "shown": gain["shown"]}
    return result


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    labels = [r["label"].replace(", ", "\n") for r in rows]
    gains = [100 * r["acc_t2_oracle"]["gain"] for r in rows]
    errors = np.array([[100 * (r["acc_t2_oracle"]["gain"] - r["acc_t2_oracle"]["ci"][0]),
                        100 * (r["acc_t2_oracle"]["ci"][1] - r["acc_t2_oracle"]["gain"])] for r in rows]).T
    # The control is no reflection setting: drawn apart so that nobody reads its bar as one.
    colors = ["tab:blue" if r.get("control") else "tab:green" if r["acc_t2_oracle"]["shown"] else "tab:gray"
              for r in rows]
    bars = ax.bar(labels, gains, yerr=errors, color=colors, capsize=4)
    for bar, r in zip(bars, rows):
        if r.get("control"):
            bar.set_hatch("//")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("held-out Acc@t2 gain (points)")
    ax.set_title("trained minus untrained, paired bootstrap 95% CI")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_markdown(args, rows: list[dict], failed: list[dict], seconds: float, path: Path) -> None:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = [
        "# Evidence run: settings I-IV on held-out problems (written by scripts/evidence.py)", "",
        f"Command: `python scripts/evidence.py --task {args.task} --train {args.train} --test {args.test} "
        f"--max-tokens {args.max_tokens} --instructions {args.instructions} --samples {args.samples} --epochs {args.epochs} --lr {args.lr} "
        f"--batch-size {args.batch_size}` "
        f"({seconds / 60:.0f} min on this machine). Model: SmolLM2-135M-Instruct (embedded default), LoRA r=8, "
        f"alpha=32. Task `{args.task}`: held-out test problems never seen in training.", "",
        "Gain = trained minus untrained on the same test problems; 95% CI by paired bootstrap over problems. "
        "**shown** means the whole interval is above zero.", "",
        "| model | train rows of the setting (kept reflections that corrected / all reflections) | n test | "
        "Acc@t1 untrained → trained (gain [95% CI]) | Acc@t2 (oracle-gated) untrained → trained | gain [95% CI] | "
        "shown | Acc@t2 oracle-free gain [95% CI] |",
        "|---|---|---:|---|---|---|---|---|"]
    for r in rows:
        t1, t2, free = r["acc_t1"], r["acc_t2_oracle"], r.get("acc_t2_free")
        free_text = (f"{pct(free['gain'])} [{pct(free['ci'][0])}, {pct(free['ci'][1])}]" if free else "-")
        used = "+".join(str(r["rows"].get(name, 0)) for _, name, _ in STAGES[r["setting"]])
        used += " (no reflection)" if r.get("control") else f" ({r.get('corrected', '?')} / {r.get('reflections', '?')})"
        lines.append(f"| {r['label']} | {used} | {r['n']} | {pct(t1['untrained'])} → {pct(t1['trained'])} "
                     f"({pct(t1['gain'])} [{pct(t1['ci'][0])}, {pct(t1['ci'][1])}]) | "
                     f"{pct(t2['untrained'])} → {pct(t2['trained'])} | {pct(t2['gain'])} "
                     f"[{pct(t2['ci'][0])}, {pct(t2['ci'][1])}] | {'yes' if t2['shown'] else 'no'} | {free_text} |")
    lines += [f"| {r['label']} | - | - | not trained: {r['error'][:200]} | | | | |" for r in failed]
    lines += ["", "![gains](evidence.png)", "",
              "Raw results: `results.json` and `samples.jsonl` under each `setting_*/iter_*/evaluate/` of the run "
              "directory; the numbers above are in `evidence.json` beside this file."]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="add")
    parser.add_argument("--out", default="runs/evidence")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--instructions", type=int, default=4, help="pool instructions per failure")
    parser.add_argument("--samples", type=int, default=2, help="reflections per instruction and failure")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--lr", type=float, default=3e-4, help="LoRA learning rate of SFT (DPO: a tenth)")
    parser.add_argument("--batch-size", type=int, default=4, help="training rows per step")
    parser.add_argument("--second-iteration", default="I", help="setting that also runs a second iteration")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--no-control", action="store_true", help="skip the control (see above)")
    parser.add_argument("--cache", default=None)
    parser.add_argument("--docs", default="docs/evidence/new-run", help="folder for this run's table, JSON and figure")
    parser.add_argument("--report-only", action="store_true",
                        help="summarise the loops already in --out (e.g. of an interrupted run) without running")
    args = parser.parse_args()

    started = time.time()
    rows = []
    for setting in args.settings.split(","):
        iterations = 2 if setting == args.second_iteration else 1
        cfg = loop_config(args, setting, iterations)
        try:
            if not args.report_only:
                evolve(cfg)
        except Exception as exc:  # one setting failing must not hide the others
            print(f"setting {setting}: {type(exc).__name__}: {exc}")
            rows.append({"label": f"setting {setting}", "error": str(exc)})
            continue
        loop = Path(cfg.out)
        if (loop / "evolve.json").is_file():
            stopped = json.loads((loop / "evolve.json").read_text())["stopped"]
            if "nothing to learn" in stopped:
                rows.append({"label": f"setting {setting}", "error": stopped})
        for k in range(1, iterations + 1):
            if (loop / f"iter_{k}" / "evaluate" / "samples.jsonl").is_file():
                gain = paired_gain(loop / "iter_0" / "evaluate", loop / f"iter_{k}" / "evaluate")
                curation = json.loads((loop / f"iter_{k}" / "curate" / "curation.json").read_text())
                rows.append({"label": f"setting {setting}, iteration {k}", "setting": setting, **gain,
                             "rows": {name: d["train"] for name, d in curation["datasets"].items()},
                             "reflections": curation["reflections"],
                             "corrected": curation["reflections_kept_correct"]})
        if setting == "I" and not args.no_control:
            try:
                rows += run_control(cfg, Path(args.out) / "control")
            except Exception as exc:
                print(f"control: {type(exc).__name__}: {exc}")
                rows.append({"label": "control", "error": str(exc)})
    seconds = time.time() - started
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    ok = [r for r in rows if "error" not in r]
    (docs / "evidence.json").write_text(json.dumps({"args": vars(args), "rows": rows, "seconds": seconds}, indent=2))
    if ok:
        plot(ok, docs / "evidence.png")
        write_markdown(args, ok, [r for r in rows if "error" in r], seconds, docs / "evidence_run.md")
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
