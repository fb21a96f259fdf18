"""Report plots as PNG bytes (matplotlib, Agg backend): accuracy with CIs, flips, reflection lengths,
success per instruction. Each function takes plain numbers and returns one figure."""

from __future__ import annotations

import io
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

COLORS = {"Acc@t1": "#8c8c8c", "Acc@t2 retry (no reflection)": "#c5b0d5", "Acc@t2 oracle": "#1f77b4",
          "Acc@t2 oracle-free": "#ff7f0e"}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _point_and_error(estimate: dict | None) -> tuple[float, tuple[float, float]]:
    """Percent value and (below, above) error lengths for matplotlib; zeros where not measured."""
    if not estimate:
        return 0.0, (0.0, 0.0)
    value = 100 * estimate["value"]
    ci = estimate.get("ci")
    if not ci:
        return value, (0.0, 0.0)
    return value, (value - 100 * ci[0], 100 * ci[1] - value)


def accuracy_chart(groups: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """Grouped bars per (label, metrics group): Acc@t1, the retry without reflection, oracle-gated and
    oracle-free Acc@t2, 95% CIs."""
    series = {
        "Acc@t1": [g["acc_t1"] for _, g in groups],
        "Acc@t2 retry (no reflection)": [(g.get("retry") or {}).get("acc_t2") for _, g in groups],
        "Acc@t2 oracle": [g["oracle"]["acc_t2"] for _, g in groups],
        "Acc@t2 oracle-free": [(g.get("oracle_free") or {}).get("acc_t2") for _, g in groups],
    }
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(groups) + 2), 3.6))
    for k, (name, estimates) in enumerate(series.items()):
        points = [_point_and_error(e) for e in estimates]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, [p for p, _ in points], width, label=name, color=COLORS[name],
               yerr=np.array([e for _, e in points]).T, capsize=3)
    ax.set_xticks(x, [label for label, _ in groups], rotation=20 if len(groups) > 3 else 0, ha="right"
                  if len(groups) > 3 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Accuracy per run and task (error bars: 95% bootstrap CI)")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def flip_chart(title: str, panels: Sequence[tuple[str, dict[str, int]]]) -> bytes:
    """One 2x2 heatmap per protocol: trial 1 (rows) vs trial 2 (columns), right/wrong counts."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.0), squeeze=False)
    for ax, (name, flips) in zip(axes[0], panels):
        table = np.array([[flips["right_to_right"], flips["right_to_wrong"]],
                          [flips["wrong_to_right"], flips["wrong_to_wrong"]]])
        ax.imshow(table, cmap="Blues", vmin=0, vmax=max(1, table.max()))
        for (i, j), count in np.ndenumerate(table):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > table.max() / 2 and count else "black", fontsize=12)
        ax.set_xticks([0, 1], ["right", "wrong"])
        ax.set_yticks([0, 1], ["right", "wrong"])
        ax.set_xlabel("trial 2")
        ax.set_title(name, fontsize=10)
    axes[0][0].set_ylabel("trial 1")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _png(fig)


def length_chart(lengths: dict[str, list[int]]) -> bytes:
    """Distribution of reflection lengths (words) per run, as box plots with the points over them."""
    labels = [label for label, values in lengths.items() if values]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(labels) + 2), 3.2))
    data = [lengths[label] for label in labels]
    ax.boxplot(data, showmeans=True)
    rng = np.random.default_rng(0)
    for k, values in enumerate(data, 1):
        ax.scatter(k + rng.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.5, color="#1f77b4")
    ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20 if len(labels) > 3 else 0)
    ax.set_ylabel("reflection length (words)")
    ax.set_title("Reflection lengths")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def instruction_chart(stats: dict[str, tuple[int, int]], title: str) -> bytes:
    """Share of reflections followed by a correct trial 2, per instruction id (count beside each bar)."""
    items = sorted(stats.items(), key=lambda kv: (kv[1][0] / kv[1][1] if kv[1][1] else 0, kv[0]))
    fig, ax = plt.subplots(figsize=(6.5, max(2.0, 0.28 * len(items) + 1)))
    rates = [100 * s / n if n else 0 for _, (s, n) in items]
    ax.barh(range(len(items)), rates, color="#2ca02c")
    for y, (rate, (_, (s, n))) in enumerate(zip(rates, items)):
        ax.text(rate + 1, y, f"{s}/{n}", va="center", fontsize=7)
    ax.set_yticks(range(len(items)), [name for name, _ in items], fontsize=7)
    ax.set_xlim(0, 110)
    ax.set_xlabel("trial 2 correct after the reflection (%)")
    ax.set_title(title, fontsize=10)
    return _png(fig)
