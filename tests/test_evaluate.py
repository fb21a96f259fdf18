"""Evaluation: metrics on hand-made records with known answers, a real end-to-end run on the default
model, and the one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.config import EvaluateConfig
from reflectevo.errors import InputError
from reflectevo.records import Attempt, Episode, Problem, Reflection, Sampling, Verdict, read_samples
from reflectevo.report.metrics import Outcome, compute_metrics, flips
from reflectevo.stages.evaluate import EvalSample, SelfCheck, evaluate, outcome, parse_self_check, split_reflection

# ------------------------------------------------------------------------------------------ metrics


def known_outcomes() -> list[Outcome]:
    """10 problems: 4 right at trial 1. Oracle-gated: 2 of the 6 wrong get fixed.
    Oracle-free: the self-check revises 3 wrong (1 fixed) and 1 right (broken), keeps the rest."""
    out = []
    for k in range(4):
        broken = k == 0
        out.append(Outcome(task="a" if k < 2 else "b", t1=True, t2_oracle=True, t2_free=not broken,
                           revised=broken))
    for k in range(6):
        fixed_oracle, fixed_free, revised = k < 2, k == 0, k < 3
        out.append(Outcome(task="a" if k < 3 else "b", t1=False, t2_oracle=fixed_oracle, t2_free=fixed_free,
                           revised=revised, t1_extraction_failed=k == 5, t2_oracle_extraction_failed=False,
                           self_check_unparsed=k == 2))
    return out


def test_metrics_known_answers():
    m = compute_metrics(known_outcomes(), resamples=500, seed=0)
    overall = m["overall"]
    assert overall["n"] == 10
    assert overall["acc_t1"]["value"] == pytest.approx(0.4)
    assert overall["oracle"]["acc_t2"]["value"] == pytest.approx(0.6)
    assert overall["oracle"]["delta"]["value"] == pytest.approx(0.2)
    assert overall["oracle"]["reflected"] == 6
    assert overall["oracle"]["flips"] == {"right_to_right": 4, "right_to_wrong": 0, "wrong_to_right": 2,
                                          "wrong_to_wrong": 4}
    free = overall["oracle_free"]
    assert free["acc_t2"]["value"] == pytest.approx(0.4)
    assert free["delta"]["value"] == pytest.approx(0.0)
    assert free["flips"] == {"right_to_right": 3, "right_to_wrong": 1, "wrong_to_right": 1, "wrong_to_wrong": 5}
    assert free["revised"] == 4 and free["self_check_unparsed"] == 1
    assert free["self_check"] == {"wrong_flagged": 3, "wrong": 6, "right_kept": 3, "right": 4}
    assert overall["extraction_failure_rate"]["t1"]["value"] == pytest.approx(0.1)
    assert overall["f1"] is None  # no free-text task here
    # Per task: a = 2 right + 3 wrong (2 fixed by the oracle), b = 2 right + 3 wrong (none fixed).
    assert m["per_task"]["a"]["oracle"]["acc_t2"]["value"] == pytest.approx(0.8)
    assert m["per_task"]["b"]["oracle"]["acc_t2"]["value"] == pytest.approx(0.4)
    assert m["per_task"]["a"]["n"] + m["per_task"]["b"]["n"] == 10
    # Counts add up: Δ = (wrong→right − right→wrong) / n for both protocols.
    for protocol in ("oracle", "oracle_free"):
        f = overall[protocol]["flips"]
        assert sum(f.values()) == 10
        assert overall[protocol]["delta"]["value"] == pytest.approx((f["wrong_to_right"] - f["right_to_wrong"]) / 10)


def test_bootstrap_intervals_bracket_the_estimate_and_are_reproducible():
    first = compute_metrics(known_outcomes(), resamples=400, seed=7)
    again = compute_metrics(known_outcomes(), resamples=400, seed=7)
    assert first == again
    for group in [first["overall"], *first["per_task"].values()]:
        for estimate in (group["acc_t1"], group["oracle"]["acc_t2"], group["oracle"]["delta"],
                         group["oracle_free"]["acc_t2"], group["oracle_free"]["delta"]):
            low, high = estimate["ci"]
            assert low <= estimate["value"] <= high
            assert -1 <= low and high <= 1
    low, high = first["overall"]["acc_t1"]["ci"]
    assert high - low > 0.1  # 10 mixed outcomes: a real spread, not a degenerate interval
    # The oracle-gated Δ can never be negative (nothing right is revised), so neither can its interval.
    assert first["overall"]["oracle"]["delta"]["ci"][0] >= 0
    assert compute_metrics(known_outcomes(), resamples=0)["overall"]["acc_t1"]["ci"] is None


def test_flips_table():
    assert flips([True, True, False, False, False], [True, False, True, False, False]) == {
        "right_to_right": 1, "right_to_wrong": 1, "wrong_to_right": 1, "wrong_to_wrong": 2}


def attempt(correct: bool, f1: float | None = None, failed: bool = False, response: str = "x") -> Attempt:
    return Attempt(messages=[{"role": "user", "content": "q"}], response=response, model="m@0", sampling=Sampling(),
                   seed=0, verdict=Verdict(correct=correct, extracted=None if failed else "a", extraction_failed=failed,
                                           details={} if f1 is None else {"f1": f1}))


def reflection(t2: Attempt) -> Reflection:
    return Reflection(index=0, instruction_id="test-time", messages=[{"role": "user", "content": "r"}],
                      text="I misread the question.", model="m@0", sampling=Sampling(), seed=1, trial2=t2)


def sample(t1: Attempt, gated: Attempt | None, decision: str | None, free: Attempt | None, parsed=True) -> EvalSample:
    problem = Problem(id="t/test/0", task="t", split="test", question="q", gold="a")
    ep = Episode.start(problem, t1)
    if gated:
        ep.reflections.append(reflection(gated))
    check = None if decision is None else SelfCheck(messages=[], response="Verdict: X", model="m@0",
                                                    sampling=Sampling(), seed=3, decision=decision, parsed=parsed)
    return EvalSample(episode=ep, self_check=check, oracle_free=reflection(free) if free else None)


def test_reflection_value_is_paired_against_the_retry():
    # 40 failures: the reflection fixes 20 and the retry fixes the same 12 of them plus none else, so
    # the reflection's own value is 8 problems of 60; a right trial 1 stands under both.
    right = [Outcome(task="t", t1=True, t2_oracle=True, t2_retry=True) for _ in range(20)]
    both = [Outcome(task="t", t1=False, t2_oracle=True, t2_retry=True) for _ in range(12)]
    only_reflection = [Outcome(task="t", t1=False, t2_oracle=True, t2_retry=False) for _ in range(8)]
    neither = [Outcome(task="t", t1=False, t2_oracle=False, t2_retry=False) for _ in range(20)]
    m = compute_metrics(right + both + only_reflection + neither, resamples=2000, seed=1)["overall"]
    assert m["retry"]["acc_t2"]["value"] == pytest.approx(32 / 60)
    assert m["reflection_value"]["value"] == pytest.approx(8 / 60)
    low, high = m["reflection_value"]["ci"]
    # Paired: only the 8 discordant problems move the difference, so the interval sits above zero and is
    # far narrower than the difference of two independent intervals would be.
    assert 0 < low < 8 / 60 < high < 0.25
    free_width = m["oracle"]["acc_t2"]["ci"][1] - m["oracle"]["acc_t2"]["ci"][0]
    assert high - low < free_width
    # Without a retry for every failure there is no baseline, hence no reflection value.
    partial = compute_metrics(both + [Outcome(task="t", t1=False, t2_oracle=True)], resamples=0)["overall"]
    assert partial["retry"] is None and partial["reflection_value"] is None


def test_outcome_of_samples_and_mean_f1():
    samples = [
        sample(attempt(False, 0.2), attempt(True, 1.0), "revise", attempt(True, 1.0)),  # fixed both ways
        sample(attempt(True, 1.0), None, "revise", attempt(False, 0.5)),  # right, self-check broke it
        sample(attempt(True, 1.0), None, "keep", None),
        sample(attempt(False, 0.0, failed=True), attempt(False, 0.4), "keep", None, parsed=True),
    ]
    got = [outcome(s) for s in samples]
    assert [(o.t1, o.t2_oracle, o.t2_free) for o in got] == [(False, True, True), (True, True, False),
                                                            (True, True, True), (False, False, False)]
    assert got[3].t1_extraction_failed and got[3].t2_oracle_extraction_failed is False
    m = compute_metrics(got, resamples=200)["overall"]
    assert m["f1"]["t1"]["value"] == pytest.approx((0.2 + 1 + 1 + 0) / 4)
    assert m["f1"]["t2_oracle"]["value"] == pytest.approx((1 + 1 + 1 + 0.4) / 4)
    assert m["f1"]["t2_free"]["value"] == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    assert m["oracle_free"]["flips"]["right_to_wrong"] == 1
    # Round trip through JSON, as samples.jsonl stores them.
    again = EvalSample.model_validate(json.loads(samples[0].to_json()))
    assert again == samples[0]


@pytest.mark.parametrize("text, expected", [
    ("Verdict: CORRECT", "keep"),
    ("The steps look fine.\n**Verdict:** INCORRECT", "revise"),
    ("verdict - correct", "keep"),
    ("I first thought it was correct. Verdict: incorrect", "revise"),
    ("The answer is wrong because 3+4 is 7.", "revise"),
    ("Yes, the solution is correct.", "keep"),
    ("The answer is: 18", None),
    ("It is correct in part but the final step is wrong.", None),
    ("", None),
])
def test_parse_self_check(text, expected):
    assert parse_self_check(text) == expected


def test_split_reflection_of_one_stage_reply():
    reply = ("I added instead of subtracting.\nI should subtract the eggs eaten.\n\n"
             "Corrected solution:\n16-3-4=9\nThe answer is: 18")
    assert split_reflection(reply) == "I added instead of subtracting.\nI should subtract the eggs eaten."
    assert split_reflection("16-3-4=9. The answer is: 18") == "16-3-4=9. The answer is: 18"


# ------------------------------------------------------------------------------------------ end to end


def small_config(tmp_path, **overrides) -> EvaluateConfig:
    values = dict(tasks=["gsm8k"], out=str(tmp_path / "eval"), limit=3, max_tokens=32, reflection_max_tokens=24,
                  self_check_max_tokens=12, batch_size=8, bootstrap=200, cache=str(tmp_path / "cache.sqlite"))
    values.update(overrides)
    return EvaluateConfig(**values)


def test_evaluate_end_to_end_on_the_default_model(tmp_path, default_backend):
    cfg = small_config(tmp_path)
    results_path = evaluate(cfg, preloaded={"smollm2-135m": default_backend})
    results = json.loads(results_path.read_text())
    assert results["schema"] == "reflectevo.eval-results/2"
    assert results["models"]["generator"]["fingerprint"] == default_backend.fingerprint
    assert set(results["models"]) == {"generator", "reflector", "corrector", "self_checker"}
    assert results["tasks"]["gsm8k"]["version"] and results["split"] == "test"
    assert results["seeds"]["trial1"] == 0 and results["config"]["limit"] == 3
    assert "torch" in results["versions"] and results["sampling"]["max_tokens"] == 32

    samples = read_samples(tmp_path / "eval" / "samples.jsonl")
    assert [s.episode.id for s in samples] == ["gsm8k/test/0", "gsm8k/test/1", "gsm8k/test/2"]
    for s in samples:
        t1 = s.episode.trial1
        assert t1.messages[-1]["role"] == "user" and t1.model == default_backend.model_id
        # Oracle-gated: a reflection (with its trial 2) exactly where the verifier said trial 1 is wrong.
        assert bool(s.episode.reflections) == (not t1.verdict.correct)
        for r in s.episode.reflections:
            assert r.instruction_id == "test-time" and r.trial2 is not None
            assert r.messages[1] == {"role": "assistant", "content": t1.response}  # reflects on trial 1 itself
            assert r.trial2.messages[1]["content"] == t1.response  # trial 2 sees the original trial 1
        # The retry baseline: exactly the oracle-gated failures, the same prompt as trial 2 minus the reflection.
        assert (s.retry is not None) == (not t1.verdict.correct)
        if s.retry:
            r = s.episode.reflections[0]
            assert s.retry.messages[:2] == r.trial2.messages[:2]  # same question, same failed trial 1
            assert "reflection" not in s.retry.messages[-1]["content"].lower()
            assert s.retry.messages[-1]["content"].startswith("Your answer is incorrect.")
            assert s.retry.seed == r.trial2.seed and s.retry.sampling == r.trial2.sampling
        # Oracle-free: a reflection exactly where the self-check said revise, with no gold feedback.
        assert s.self_check is not None
        assert (s.oracle_free is not None) == (s.self_check.decision == "revise")
        if s.oracle_free:
            assert s.oracle_free.messages[-1]["content"].startswith("Your answer is incorrect.")

    metrics = results["metrics"]
    overall = metrics["overall"]
    assert overall["n"] == 3 and list(metrics["per_task"]) == ["gsm8k"]
    wrong = sum(not s.episode.trial1.verdict.correct for s in samples)
    assert overall["oracle"]["reflected"] == wrong
    assert overall["oracle"]["flips"]["right_to_wrong"] == 0  # nothing right is ever revised under the oracle
    assert overall["oracle_free"]["revised"] == sum(s.self_check.decision == "revise" for s in samples)
    for protocol in ("oracle", "oracle_free"):
        f = overall[protocol]
        assert sum(f["flips"].values()) == 3
        assert f["acc_t2"]["value"] - overall["acc_t1"]["value"] == pytest.approx(
            (f["flips"]["wrong_to_right"] - f["flips"]["right_to_wrong"]) / 3)
        assert f["acc_t2"]["value"] == pytest.approx(
            (f["flips"]["right_to_right"] + f["flips"]["wrong_to_right"]) / 3)
    assert overall["acc_t1"]["value"] == pytest.approx(sum(s.episode.trial1.verdict.correct for s in samples) / 3)
    retried = [(s.retry or s.episode.trial1).verdict.correct for s in samples]
    assert overall["retry"]["acc_t2"]["value"] == pytest.approx(sum(retried) / 3)
    assert overall["reflection_value"]["value"] == pytest.approx(
        overall["oracle"]["acc_t2"]["value"] - overall["retry"]["acc_t2"]["value"])
    assert (tmp_path / "eval" / "config.yaml").is_file()

    # One-stage setting on the same run's trial 1s (cached): a single reply holds reflection and solution.
    one = small_config(tmp_path, out=str(tmp_path / "one"), limit=2, oracle_free=False, mode="one-stage",
                       reflection_max_tokens=16, max_tokens=24)
    evaluate(one, preloaded={"smollm2-135m": default_backend})
    for s in read_samples(tmp_path / "one" / "samples.jsonl"):
        assert s.self_check is None and s.oracle_free is None
        for r in s.episode.reflections:
            assert r.trial2.messages == r.messages  # the reply to the reflect-and-correct prompt is trial 2
            assert r.text and r.text in r.trial2.response


# ------------------------------------------------------------------------------------------ bad input


def test_task_without_a_test_split(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n")
    (tmp_path / "only_train.yaml").write_text("answer_type: number\nsplits: {train: train.jsonl}\n")
    with pytest.raises(InputError, match=r"has no 'test' split \(it has: train, validation\); choose one with --split"):
        evaluate(small_config(tmp_path, tasks=[str(tmp_path / "only_train.yaml")]))
    assert not (tmp_path / "eval").exists()  # failed before a run directory (or a model) was touched


def test_unknown_model_and_settings_fail_before_loading(tmp_path):
    with pytest.raises(InputError, match="--reflector: unknown model 'no-such-model'"):
        evaluate(small_config(tmp_path, reflector="no-such-model"))
    with pytest.raises(InputError, match="'corrector' applies to --mode two-stage"):
        evaluate(small_config(tmp_path, mode="one-stage", corrector="smollm2-135m"))
    with pytest.raises(InputError, match="unknown task 'nope'"):
        evaluate(small_config(tmp_path, tasks=["nope"]))


def test_model_that_fails_to_load_keeps_previous_outputs(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "not-a-real-architecture"}')
    run = tmp_path / "eval"
    run.mkdir()
    (run / "results.json").write_text("previous results")
    result = CliRunner().invoke(app, ["evaluate", "--task", "gsm8k", "-n", "1", "--out", str(run),
                                      "--generator", str(broken), "--no-cache"])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: --generator: cannot load model") and "broken-model" in lines[-1]
    assert (run / "results.json").read_text() == "previous results"
    assert not (run / "config.yaml").exists()


def test_cli_requires_task_and_out(tmp_path):
    result = CliRunner().invoke(app, ["evaluate", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "error: missing --task" in result.output
    result = CliRunner().invoke(app, ["evaluate", "--task", "gsm8k", "--out", str(tmp_path / "x"),
                                      "--mode", "three-stage"])
    assert result.exit_code == 2 and "setting 'mode'" in result.output
