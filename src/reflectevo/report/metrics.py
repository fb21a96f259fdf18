"""Test-time metrics (docs/evaluation.md) from per-problem outcomes: accuracies, Δ, the retry baseline and the
reflection value, flips, extraction failures, F1, CIs.

Every number is a fraction of a real count (the problems evaluated), never of a constant. Confidence
intervals are percentile bootstrap intervals: problems are resampled with replacement (within each task,
so the overall figure keeps the task mix), and paired statistics (Δ) resample trial 1 and trial 2 of the
same problem together.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Outcome:
    """One test problem, reduced to what the metrics need.

    t2_oracle is the answer after the oracle-gated reflection: trial 1's own result where trial 1 was
    right (no reflection is made), the trial-2 result where it was wrong. t2_free is the same for the
    oracle-free protocol (the model's self-check decides), None where that protocol was not run.
    """

    task: str
    t1: bool
    t2_oracle: bool
    # Extraction failures of finished responses (the format was not followed), and responses cut off by
    # max_tokens, counted apart (a cut response without an answer statement is neither right nor read).
    t1_extraction_failed: bool = False
    t1_truncated: bool = False
    t2_oracle_extraction_failed: bool | None = None  # None: no trial 2 was made
    t2_oracle_truncated: bool | None = None
    t2_free: bool | None = None
    t2_free_extraction_failed: bool | None = None
    t2_free_truncated: bool | None = None
    t2_retry: bool | None = None  # after a retry without reflection (trial 1 where it was right); None: not run
    t2_retry_extraction_failed: bool | None = None
    t2_retry_truncated: bool | None = None
    revised: bool | None = None  # oracle-free: the self-check asked for a revision
    self_check_unparsed: bool = False  # the self-check's verdict could not be read (treated as "revise")
    f1_t1: float | None = None  # free-text tasks: token F1 of each answer
    f1_t2_oracle: float | None = None
    f1_t2_free: float | None = None


def flips(before: Sequence[bool], after: Sequence[bool]) -> dict[str, int]:
    """The 2x2 table of trial-1 vs trial-2 correctness, as counts."""
    table = {"right_to_right": 0, "right_to_wrong": 0, "wrong_to_right": 0, "wrong_to_wrong": 0}
    for b, a in zip(before, after):
        table[f"{'right' if b else 'wrong'}_to_{'right' if a else 'wrong'}"] += 1
    return table


def resample_indices(groups: Sequence[str], resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) indices drawn with replacement within each group (stratified bootstrap)."""
    rng = np.random.default_rng(seed)
    groups = np.asarray(groups)
    columns = []
    for group in dict.fromkeys(groups.tolist()):
        members = np.flatnonzero(groups == group)
        columns.append(members[rng.integers(0, len(members), size=(resamples, len(members)))])
    return np.concatenate(columns, axis=1) if columns else np.zeros((resamples, 0), dtype=int)


def estimate(values: np.ndarray, index: np.ndarray | None, level: float = LEVEL) -> dict[str, Any] | None:
    """Mean of `values` (NaN = not applicable) with a percentile bootstrap CI; None if nothing applies."""
    present = ~np.isnan(values)
    if not present.any():
        return None
    point = float(values[present].mean())
    result: dict[str, Any] = {"value": point, "n": int(present.sum()), "ci": None}
    if index is not None and index.shape[0] > 0:
        sampled = values[index]  # (resamples, n)
        counts = (~np.isnan(sampled)).sum(axis=1)
        sums = np.nansum(sampled, axis=1)
        means = sums[counts > 0] / counts[counts > 0]
        if means.size:
            tail = (1 - level) / 2 * 100
            low, high = np.percentile(means, [tail, 100 - tail])
            # Guard against floating-point noise putting the point a hair outside its own interval.
            result["ci"] = [float(min(low, point)), float(max(high, point))]
    return result


def _column(outcomes: Sequence[Outcome], get: Callable[[Outcome], Any]) -> np.ndarray:
    return np.array([np.nan if (v := get(o)) is None else float(v) for o in outcomes], dtype=float)


def group_metrics(outcomes: Sequence[Outcome], index: np.ndarray | None, level: float = LEVEL) -> dict[str, Any]:
    """All metrics of one group of outcomes; `index` holds bootstrap resamples of their positions."""
    col = lambda get: _column(outcomes, get)  # noqa: E731
    t1, t2 = col(lambda o: o.t1), col(lambda o: o.t2_oracle)
    result: dict[str, Any] = {
        "n": len(outcomes),
        "acc_t1": estimate(t1, index, level),
        "oracle": {
            "acc_t2": estimate(t2, index, level),
            "delta": estimate(t2 - t1, index, level),
            "reflected": sum(not o.t1 for o in outcomes),
            "flips": flips([o.t1 for o in outcomes], [o.t2_oracle for o in outcomes]),
        },
        "retry": None,
        "reflection_value": None,
        "oracle_free": None,
        "extraction_failure_rate": {
            "t1": estimate(col(lambda o: o.t1_extraction_failed), None),
            "t2_oracle": estimate(col(lambda o: o.t2_oracle_extraction_failed), None),
            "t2_free": estimate(col(lambda o: o.t2_free_extraction_failed), None),
        },
        "truncation_rate": {
            "t1": estimate(col(lambda o: o.t1_truncated), None),
            "t2_oracle": estimate(col(lambda o: o.t2_oracle_truncated), None),
            "t2_free": estimate(col(lambda o: o.t2_free_truncated), None),
        },
        "f1": None,
    }
    if outcomes and all(o.t2_retry is not None for o in outcomes):
        t2r = col(lambda o: o.t2_retry)
        result["retry"] = {"acc_t2": estimate(t2r, index, level), "delta": estimate(t2r - t1, index, level),
                           "flips": flips([o.t1 for o in outcomes], [o.t2_retry for o in outcomes])}
        # Paired: a problem's trial 2 with and without reflection move together in every resample.
        result["reflection_value"] = estimate(t2 - t2r, index, level)
        result["extraction_failure_rate"]["t2_retry"] = estimate(col(lambda o: o.t2_retry_extraction_failed), None)
        result["truncation_rate"]["t2_retry"] = estimate(col(lambda o: o.t2_retry_truncated), None)
    free = [o for o in outcomes if o.t2_free is not None]
    if free and len(free) == len(outcomes):
        t2f = col(lambda o: o.t2_free)
        wrong = [o for o in outcomes if not o.t1]
        right = [o for o in outcomes if o.t1]
        result["oracle_free"] = {
            "acc_t2": estimate(t2f, index, level),
            "delta": estimate(t2f - t1, index, level),
            "revised": sum(bool(o.revised) for o in outcomes),
            "self_check_unparsed": sum(o.self_check_unparsed for o in outcomes),
            # How good the self-check is as a detector of wrong answers (counts, so they add up).
            "self_check": {"wrong_flagged": sum(bool(o.revised) for o in wrong), "wrong": len(wrong),
                           "right_kept": sum(not o.revised for o in right), "right": len(right)},
            "flips": flips([o.t1 for o in outcomes], [bool(o.t2_free) for o in outcomes]),
        }
    if any(o.f1_t1 is not None for o in outcomes):
        result["f1"] = {"t1": estimate(col(lambda o: o.f1_t1), index, level),
                        "t2_oracle": estimate(col(lambda o: o.f1_t2_oracle), index, level),
                        "t2_free": estimate(col(lambda o: o.f1_t2_free), index, level)}
    return result


def compute_metrics(outcomes: Sequence[Outcome], resamples: int = 1000, seed: int = 0,
                    level: float = LEVEL) -> dict[str, Any]:
    """{"per_task": {task: metrics}, "overall": metrics (pooled over all problems), "bootstrap": {...}}."""
    outcomes = list(outcomes)
    index = resample_indices([o.task for o in outcomes], resamples, seed) if resamples else None
    by_task: dict[str, list[int]] = defaultdict(list)
    for position, o in enumerate(outcomes):
        by_task[o.task].append(position)
    per_task = {}
    for task, positions in by_task.items():
        task_index = None
        if index is not None:
            # Resample this task alone: re-map its positions to 0..len-1 for a task-local index.
            task_index = resample_indices([task] * len(positions), resamples, seed)
        per_task[task] = group_metrics([outcomes[p] for p in positions], task_index, level)
    return {"per_task": per_task, "overall": group_metrics(outcomes, index, level),
            "bootstrap": {"resamples": resamples, "seed": seed, "level": level,
                          "method": "percentile, problems resampled within each task"}}


def summary_row(metrics: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of one group, flat, for tables (fractions; None where not measured)."""
    value = lambda m: None if m is None else m["value"]  # noqa: E731
    free = metrics.get("oracle_free") or {}
    retry = metrics.get("retry") or {}
    return {
        "n": metrics["n"],
        "acc_t1": value(metrics["acc_t1"]),
        "acc_t2_oracle": value(metrics["oracle"]["acc_t2"]),
        "delta_oracle": value(metrics["oracle"]["delta"]),
        "acc_t2_retry": value(retry.get("acc_t2")),
        "reflection_value": value(metrics.get("reflection_value")),
        "reflection_value_ci": (metrics.get("reflection_value") or {}).get("ci"),
        "acc_t2_free": value(free.get("acc_t2")),
        "delta_free": value(free.get("delta")),
        "wrong_to_right_oracle": metrics["oracle"]["flips"]["wrong_to_right"],
        "right_to_wrong_oracle": metrics["oracle"]["flips"]["right_to_wrong"],
        "wrong_to_right_free": (free.get("flips") or {}).get("wrong_to_right"),
        "right_to_wrong_free": (free.get("flips") or {}).get("right_to_wrong"),
        "extraction_failure_t1": value(metrics["extraction_failure_rate"]["t1"]),
        "truncated_t1": value((metrics.get("truncation_rate") or {}).get("t1")),
        "truncated_t2_oracle": value((metrics.get("truncation_rate") or {}).get("t2_oracle")),
        "f1_t1": value((metrics.get("f1") or {}).get("t1")),
    }


METRIC_OF = {"acc_t1": lambda o: o.t1, "acc_t2_oracle": lambda o: o.t2_oracle, "acc_t2_free": lambda o: o.t2_free,
             "acc_t2_retry": lambda o: o.t2_retry}


def paired_gain(before: dict[str, Outcome], after: dict[str, Outcome], metric: str, resamples: int = 5000,
                seed: int = 0, level: float = LEVEL) -> dict[str, Any] | None:
    """after - before on the problems both evaluated, paired by problem id (both models' outcomes of a
    problem move together in every resample, within each task). None where the metric was not measured."""
    get = METRIC_OF[metric]
    ids = sorted(before.keys() & after.keys())
    if not ids or any(get(before[i]) is None or get(after[i]) is None for i in ids):
        return None
    b = np.array([float(get(before[i])) for i in ids])
    a = np.array([float(get(after[i])) for i in ids])
    index = resample_indices([before[i].task for i in ids], resamples, seed) if resamples else None
    gain = estimate(a - b, index, level)
    return {"before": float(b.mean()), "after": float(a.mean()), "gain": gain["value"], "ci": gain["ci"],
            "n": len(ids), "shown": bool(gain["ci"] and gain["ci"][0] > 0)}
