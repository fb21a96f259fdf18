"""Training logs a person can read: metrics.jsonl (every Trainer log), a progress bar, loss and reward PNGs."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path

from transformers import TrainerCallback

from reflectevo.progress import console, progress_bar
from reflectevo.runs import memory_limit, peak_memory, reset_peak_memory, write_atomic

METRICS = "metrics.jsonl"
NEAR_LIMIT = 0.85  # share of the memory limit past which a training step may be killed by the kernel's OOM killer


def memory_warning(peak: int, limit: int | None, checkpointing: bool) -> str | None:
    """What to say when training's peak memory nears the limit. A process killed for memory dies without an
    error line (SIGKILL), so this warning, printed while it still can be, is the only explanation its log will
    hold. Measured: Qwen2.5-Coder-1.5B LoRA, batch 4, 1,024 tokens passed 24 GiB without activation
    checkpointing and peaked at ~8.6 GiB with it (docs/evidence.md)."""
    if not limit or peak < NEAR_LIMIT * limit:
        return None
    cures = "lower batch_size or max_length" if checkpointing else \
        "set gradient_checkpointing (--gradient-checkpointing), or lower batch_size or max_length"
    return (f"training has used {peak / 2**30:.1f} GiB of the {limit / 2**30:.1f} GiB this machine allows; if it "
            f"stops without an error, the kernel killed it for memory: {cures}")


def read_metrics(stage_dir: Path) -> list[dict]:
    path = Path(stage_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:  # only the last line can be half-written (a run killed mid-append)
                raise
    return rows


class MetricsLog(TrainerCallback):
    """Append each Trainer log (loss, eval loss, DPO rewards/margins, ...) to metrics.jsonl; show progress."""

    def __init__(self, stage_dir: Path, label: str):
        self.path = Path(stage_dir) / METRICS
        self.label = label
        self._bar = ExitStack()
        self._advance = None
        self._shown = 0
        self._warned = False

    def on_train_begin(self, args, state, control, **kwargs):
        reset_peak_memory()  # the warning and peak_memory_gib measure this training, not earlier stages
        if not state.is_world_process_zero:
            return
        # After a resume, drop lines logged past the checkpoint by the interrupted run: no duplicates.
        kept = [m for m in read_metrics(self.path.parent) if m.get("step", 0) <= state.global_step]
        write_atomic(self.path, "".join(json.dumps(m) + "\n" for m in kept))
        self._advance = self._bar.enter_context(progress_bar(self.label, state.max_steps, "steps"))

    def on_step_end(self, args, state, control, **kwargs):
        if self._advance is not None:
            self._advance(state.global_step - self._shown)
            self._shown = state.global_step
        if not self._warned:
            checkpointing = bool(getattr(args, "activation_checkpointing", False)
                                 or getattr(args, "gradient_checkpointing", False))
            if warning := memory_warning(peak_memory(), memory_limit(), checkpointing):
                console.print(f"[yellow]{warning}[/yellow]")
                self._warned = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs,
                                     "peak_memory_gib": round(peak_memory() / 2**30, 2)}) + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        self._bar.close()
        self._advance = None


def plot_losses(stage_dir: Path, title: str) -> Path | None:
    """loss.png: training and evaluation loss per step, and DPO reward margins when there are any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = read_metrics(stage_dir)
    train = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in metrics if "eval_loss" in m]
    margins = [(m["step"], m["rewards/margins"]) for m in metrics if "rewards/margins" in m]
    if not train and not evals:
        return None
    panels = 2 if margins else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), marker=".", label="train loss")
    if evals:
        ax.plot(*zip(*evals), marker="o", linestyle="--", label="eval loss")
    ax.set(xlabel="optimiser step", ylabel="loss", title=title)
    ax.legend()
    if margins:
        axes[0][1].plot(*zip(*margins), marker=".", color="tab:green")
        axes[0][1].axhline(0, color="grey", linewidth=0.5)
        axes[0][1].set(xlabel="optimiser step", ylabel="reward margin (chosen - rejected)",
                       title="DPO reward margins")
    fig.tight_layout()
    out = Path(stage_dir) / "loss.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_rewards(stage_dir: Path, title: str) -> Path | None:
    """rewards.png (setting V): the reward per step, mean +- std over that step's rollouts, and each
    reward term's mean (the verifier's `correct`, and the shaped terms, logged even at weight 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in read_metrics(stage_dir) if "reward" in m and m.get("reward") is not None]
    if not metrics:
        return None
    steps = [m["step"] for m in metrics]
    mean = [m["reward"] for m in metrics]
    std = [m.get("reward_std") or 0.0 for m in metrics]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, mean, marker=".", color="tab:blue", label="reward (weighted total)")
    ax.fill_between(steps, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                    color="tab:blue", alpha=0.15, label="+- std over the step's rollouts")
    terms = sorted({k for m in metrics for k in m if k.startswith("rewards/") and k.endswith("/mean")})
    for key in terms:
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        ax.plot(*zip(*points), linestyle="--", linewidth=1, label=key.removeprefix("rewards/").removesuffix("/mean"))
    evals = [(m["step"], m["eval_reward"]) for m in read_metrics(stage_dir) if m.get("eval_reward") is not None]
    if evals:
        ax.plot(*zip(*evals), marker="o", linestyle="none", color="tab:red", label="eval reward")
    ax.set(xlabel="optimiser step", ylabel="reward", title=f"{title}: rewards")
    ax.legend(fontsize="small")
    fig.tight_layout()
    out = Path(stage_dir) / "rewards.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
