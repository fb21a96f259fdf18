"""Bootstrap confidence intervals of the test-time metrics (report/metrics.py), checked where they can be
wrong: Δ is paired (trial 1 and trial 2 of a problem are resampled together), resampling is stratified
by task (each task keeps its count in every resample), widths shrink like 1/sqrt(n), and a 95% interval
covers the true rate about 95% of the time. Every check here fails for an interval that merely brackets
its point estimate.
"""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from reflectevo.report.metrics import Outcome, compute_metrics, estimate, resample_indices


def outcomes(t1, t2, task="t") -> list[Outcome]:
    tasks = [task] * len(t1) if isinstance(task, str) else task
    return [Outcome(task=k, t1=bool(a), t2_oracle=bool(b)) for k, a, b in zip(tasks, t1, t2)]


def width(ci) -> float:
    return ci[1] - ci[0]


def spread(n: int, k: int, seed: int) -> np.ndarray:
    """n booleans with exactly k True, in a shuffled order."""
    values = np.zeros(n, dtype=bool)
    values[:k] = True
    return np.random.default_rng(seed).permutation(values)


# ------------------------------------------------------------------------------------- stratification

def test_resample_indices_draw_each_task_from_itself_and_keep_its_count():
    groups = np.array(["a"] * 5 + ["b"] * 3 + ["a"] * 2 + ["c"] + ["b"] * 4)  # tasks interleaved
    index = resample_indices(groups.tolist(), resamples=300, seed=3)
    assert index.shape == (300, len(groups)) and index.min() >= 0 and index.max() < len(groups)
    counts = Counter(groups.tolist())
    for row in index:
        assert Counter(groups[row].tolist()) == counts  # every resample keeps each task's count
    for task in counts:
        members = set(np.flatnonzero(groups == task).tolist())
        columns = np.flatnonzero(groups[index[0]] == task)  # the columns holding this task's draws
        drawn = index[:, columns]
        assert (groups[drawn] == task).all()  # a column of a task only ever draws that task's positions
        assert set(drawn.ravel().tolist()) == members  # ... and, over 300 resamples, every one of them
    # With replacement: repeats within a resample, and resamples that differ.
    assert any(len(set(row.tolist())) < len(row) for row in index)
    assert len({tuple(row.tolist()) for row in index}) > 250
    assert (index[:, groups[index[0]] == "c"] == np.flatnonzero(groups == "c")[0]).all()  # a one-problem task
    assert (resample_indices(groups.tolist(), 300, 3) == index).all()
    assert not (resample_indices(groups.tolist(), 300, 4) == index).all()


@pytest.mark.parametrize("easy, hard", [(50, 50), (30, 10), (7, 93)])
def test_overall_interval_keeps_the_task_mix(easy, hard):
    # Every problem of `easy` is right and every one of `hard` wrong. Stratified resampling keeps the two
    # counts in every resample, so the overall accuracy cannot move from easy / (easy + hard); pooled
    # resampling would give an interval some ±2 standard errors wide.
    tasks = ["easy", "hard"] * min(easy, hard) + ["easy"] * (easy - min(easy, hard)) \
        + ["hard"] * (hard - min(easy, hard))
    t1 = [task == "easy" for task in tasks]
    m = compute_metrics(outcomes(t1, t1, tasks), resamples=400, seed=0)
    share = easy / (easy + hard)
    assert m["overall"]["acc_t1"]["value"] == pytest.approx(share)
    assert m["overall"]["acc_t1"]["ci"] == pytest.approx([share, share])
    assert m["per_task"]["easy"]["acc_t1"]["ci"] == [1.0, 1.0]
    assert m["per_task"]["hard"]["acc_t1"]["ci"] == [0.0, 0.0]
    pooled = estimate(np.array(t1, dtype=float), resample_indices(["all"] * len(t1), 400, 0))
    assert width(pooled["ci"]) > 0.1  # what ignoring the tasks would have reported


def test_overall_interval_weighs_each_task_by_its_size():
    # Task a: 160 problems, half right; task b: 40 problems, all right. Only a varies, and it makes up 80%
    # of every resample, so the overall interval is 0.8 times a's own interval, shifted by b's 0.2.
    a = spread(160, 80, seed=1)
    tasks = ["a"] * 160 + ["b"] * 40
    t1 = np.concatenate([a, np.ones(40, dtype=bool)])
    m = compute_metrics(outcomes(t1, t1, tasks), resamples=2000, seed=0)
    overall, task_a = m["overall"]["acc_t1"], m["per_task"]["a"]["acc_t1"]
    assert overall["value"] == pytest.approx(0.8 * 0.5 + 0.2)
    assert width(overall["ci"]) == pytest.approx(0.8 * width(task_a["ci"]), rel=0.15)
    assert overall["ci"][1] < 1.0 and overall["ci"][0] > 0.2 + 0.8 * 0.3


# -------------------------------------------------------------------------------------------- pairing

def test_paired_delta_is_far_narrower_than_unpaired_when_trials_agree():
    # 400 problems, half right at trial 1; trial 2 keeps every answer and fixes 20 wrong ones. t1 and t2
    # agree on 95% of problems, so Δ's own spread is small; an unpaired interval adds the spread of
    # both accuracies.
    n, resamples = 400, 2000
    t1 = spread(n, n // 2, seed=2)
    t2 = t1.copy()
    t2[np.flatnonzero(~t1)[:20]] = True
    m = compute_metrics(outcomes(t1, t2), resamples=resamples, seed=0)["overall"]
    delta = m["oracle"]["delta"]
    assert delta["value"] == pytest.approx(20 / n)
    # Unpaired: trial 1 and trial 2 resampled independently, their means subtracted.
    i1 = resample_indices(["t"] * n, resamples, seed=10)
    i2 = resample_indices(["t"] * n, resamples, seed=11)
    diffs = t2.astype(float)[i2].mean(axis=1) - t1.astype(float)[i1].mean(axis=1)
    unpaired = np.percentile(diffs, [2.5, 97.5])
    p, p1, p2 = 20 / n, t1.mean(), t2.mean()
    assert width(unpaired) == pytest.approx(2 * 1.96 * np.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / n), rel=0.15)
    assert width(delta["ci"]) == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.15)
    assert width(delta["ci"]) < 0.5 * width(unpaired)
    assert delta["ci"][0] > 0 > unpaired[0]  # paired: the fix is significant; unpaired it would not be
    # The two accuracies themselves are as uncertain as ever: pairing narrows Δ only.
    assert width(m["acc_t1"]["ci"]) > 2 * width(delta["ci"])


def test_unchanged_answers_give_a_zero_delta_interval():
    # Trial 2 repeats trial 1 on every problem: Δ is 0 on every problem, so on every paired resample.
    t1 = spread(60, 25, seed=3)
    m = compute_metrics(outcomes(t1, t1, ["x", "y", "z"] * 20), resamples=500, seed=0)
    for group in [m["overall"], *m["per_task"].values()]:
        assert group["oracle"]["delta"]["value"] == 0.0
        assert group["oracle"]["delta"]["ci"] == [0.0, 0.0]
        assert width(group["acc_t1"]["ci"]) > 0.1


def test_every_problem_improving_by_one_gives_delta_interval_one():
    tasks = ["x"] * 12 + ["y"] * 8
    m = compute_metrics(outcomes([False] * 20, [True] * 20, tasks), resamples=500, seed=0)
    for group in [m["overall"], *m["per_task"].values()]:
        assert group["oracle"]["delta"]["value"] == 1.0
        assert group["oracle"]["delta"]["ci"] == [1.0, 1.0]
        assert group["oracle"]["flips"]["wrong_to_right"] == group["n"]


def test_oracle_free_delta_is_paired_too():
    # The self-check breaks 10 right answers and fixes 10 wrong ones among 200 otherwise unchanged problems:
    # Δ = 0, with a paired interval of width ~ 2 * 1.96 * sqrt(0.1 / 200).
    t1 = spread(200, 100, seed=4)
    free = t1.copy()
    free[np.flatnonzero(t1)[:10]] = False
    free[np.flatnonzero(~t1)[:10]] = True
    rows = [Outcome(task="t", t1=bool(a), t2_oracle=bool(a), t2_free=bool(b), revised=bool(a != b))
            for a, b in zip(t1, free)]
    delta = compute_metrics(rows, resamples=2000, seed=0)["overall"]["oracle_free"]["delta"]
    assert delta["value"] == 0.0
    assert width(delta["ci"]) == pytest.approx(2 * 1.96 * np.sqrt(0.1 / 200), rel=0.2)
    assert delta["ci"][0] < 0 < delta["ci"][1]


# ---------------------------------------------------------------------------------- width and coverage

def test_interval_width_shrinks_like_one_over_sqrt_n():
    widths = {}
    for n in (100, 400, 1600):
        t1 = spread(n, int(0.3 * n), seed=n)
        ci = compute_metrics(outcomes(t1, t1), resamples=2000, seed=0)["overall"]["acc_t1"]["ci"]
        widths[n] = width(ci)
        assert widths[n] == pytest.approx(2 * 1.96 * np.sqrt(0.3 * 0.7 / n), rel=0.12)
    assert widths[100] / widths[400] == pytest.approx(2, rel=0.12)
    assert widths[400] / widths[1600] == pytest.approx(2, rel=0.12)


def coverage(level: float, datasets: int = 200, n: int = 60, p: float = 0.3) -> float:
    """Share of `datasets` simulated datasets (n problems, true rate p) whose interval covers p."""
    rng = np.random.default_rng(2024)
    covered = 0
    for k in range(datasets):
        t1 = rng.random(n) < p
        ci = compute_metrics(outcomes(t1, t1), resamples=300, seed=k, level=level)["overall"]["acc_t1"]["ci"]
        covered += ci[0] <= p <= ci[1]
    return covered / datasets


def test_95_percent_intervals_cover_the_true_rate():
    started = time.monotonic()
    at_95 = coverage(0.95)
    assert 0.90 <= at_95 <= 0.99, at_95
    assert time.monotonic() - started < 2
    # The same simulation separates levels: an 80% interval covers clearly less often.
    at_80 = coverage(0.80)
    assert 0.70 <= at_80 <= 0.88 and at_80 < at_95 - 0.05, (at_80, at_95)


def test_paired_gain_pairs_by_problem_id_and_stratifies():
    from reflectevo.report.metrics import Outcome, paired_gain

    before = {f"p{i}": Outcome(task="a" if i < 30 else "b", t1=i % 3 == 0, t2_oracle=i % 3 == 0) for i in range(60)}
    # After: the same outcomes, plus 6 problems fixed; listed in another order and with one extra problem.
    after = {pid: Outcome(task=o.task, t1=o.t1 or pid in {"p1", "p2", "p4", "p5", "p7", "p8"}, t2_oracle=False)
             for pid, o in reversed(list(before.items()))}
    after["extra"] = Outcome(task="a", t1=True, t2_oracle=True)
    gain = paired_gain(before, after, "acc_t1", resamples=2000, seed=0)
    assert gain["n"] == 60 and gain["gain"] == pytest.approx(6 / 60) and gain["shown"]
    low, high = gain["ci"]
    assert 0 < low < 0.1 < high < 0.2  # only the six discordant problems vary
    assert paired_gain(before, before, "acc_t1", resamples=500)["ci"] == [0.0, 0.0]
    assert paired_gain(before, after, "acc_t2_free") is None  # not measured
