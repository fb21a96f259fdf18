"""Curation: hand-made episodes for exact assertions, and real episodes from the generation stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.errors import InputError
from reflectevo import prompts
from reflectevo.prompts import correction_prompt, reflect_and_correct_prompt, reflection_prompt
from reflectevo.records import Attempt, Episode, Reflection, Sampling, Verdict, episodes_to_jsonl, read_episodes
from reflectevo.stages.curate import (CurateConfig, curate, curate_episodes, split_by_problem,
                                      states_gold_answer)
from reflectevo.tasks import get_task
from training_data import load_curated

GSM8K = get_task("gsm8k")
QUESTION = "Tom has 3 boxes with 4 apples each. How many apples does he have?"


def attempt(messages, response, correct, extracted=None):
    return Attempt(messages=messages, response=response, model="hand@0", sampling=Sampling(), seed=0,
                   verdict=Verdict(correct=correct, extracted=extracted,
                                   feedback="correct" if correct else "incorrect"))


def episode(eid="gsm8k/train/0", reflections=(), task="gsm8k", gold="12", trial1_correct=False,
            answer_format=GSM8K.answer_format):
    """A failed trial 1 and reflections given as (text, trial-2 correct, instruction id)."""
    t1_messages = [{"role": "user", "content": f"Question: {QUESTION}\n\n{answer_format}"}]
    t1 = attempt(t1_messages, "3 + 4 = 7. The answer is: 7", trial1_correct, "7")
    ep = Episode(id=eid, task=task, split="train", question=QUESTION, gold=gold, trial1=t1)
    for index, (text, correct, inst) in enumerate(reflections):
        r_messages = reflection_prompt(t1_messages, t1.response, "incorrect", f"instruction {inst}")
        t2_messages = correction_prompt(t1_messages, t1.response, "incorrect", text, answer_format)
        response = "3 * 4 = 12. The answer is: 12" if correct else "3 + 4 + 1 = 8. The answer is: 8"
        ep.reflections.append(Reflection(index=index, instruction_id=inst, messages=r_messages, text=text,
                                         model="hand@0", sampling=Sampling(temperature=0.8), seed=1,
                                         trial2=attempt(t2_messages, response, correct)))
    return ep


GOOD = "I added the numbers instead of multiplying the boxes by the apples in each box."
BAD = "I should double check the addition, maybe I lost a box somewhere along the way."
OTHER = "The question asks for a product: every box holds the same count, so repeated addition is needed."


def cfg(**kw):
    return CurateConfig(source="unused", **kw)


def test_rows_follow_the_training_contract():
    ep = episode(reflections=[(GOOD, True, "step.calc.high"), (BAD, False, "quick.calc.low")])
    sets, counts = curate_episodes([ep], cfg(validation=0))
    t1, (good, bad) = ep.trial1, ep.reflections
    (one,) = sets["sft_one_stage"]["train"]
    assert one["prompt"] == reflect_and_correct_prompt(t1.messages, t1.response, "incorrect", GSM8K.answer_format)
    assert one["completion"] == [{"role": "assistant", "content": GOOD + "\n\n" + good.trial2.response}]
    assert (one["task"], one["episode_id"], one["reflection_index"], one["instruction_id"]) == \
        ("gsm8k", ep.id, 0, "step.calc.high")
    (reflect,) = sets["sft_reflect"]["train"]
    assert reflect["prompt"] == prompts.test_reflection_prompt(t1.messages, t1.response, "incorrect")
    assert reflect["completion"] == [{"role": "assistant", "content": GOOD}]
    (correct,) = sets["sft_correct"]["train"]
    assert correct["prompt"] == good.trial2.messages
    assert correct["completion"] == [{"role": "assistant", "content": good.trial2.response}]
    # D±: the reflection that led to a correct trial 2 is chosen, the other one rejected.
    (pair,) = sets["dpo_contrastive"]["train"]
    assert pair["chosen"] == [{"role": "assistant", "content": GOOD}]
    assert pair["rejected"] == [{"role": "assistant", "content": BAD}]
    assert (pair["chosen_reflection_index"], pair["rejected_reflection_index"]) == (0, 1)
    assert (pair["chosen_instruction_id"], pair["rejected_instruction_id"]) == ("step.calc.high", "quick.calc.low")
    assert pair["prompt"] == reflect["prompt"]
    assert sets["dpo_preference"]["train"] == []  # only one reflection corrected the answer
    assert counts["reflections_kept_correct"] == 1


def test_rl_prompts_one_row_per_failure_and_instruction(tmp_path):
    """Setting V's prompts: the test-time one-stage prompt (exactly what `evaluate --mode one-stage` sends)
    and the same prompt with each pool instruction of the episode's reflections, whether or not any
    reflection corrected the answer; each row holds the problem its reward is judged against."""
    from reflectevo.records import Problem
    from reflectevo.records import RLPrompt

    failed = episode(reflections=[(BAD, False, "quick.calc.low"), (OTHER, False, "quick.calc.low"),
                                  (GOOD, True, "step.calc.high")])
    bare = episode(eid="gsm8k/train/1")  # failed, never reflected on: still a prompt
    right = episode(eid="gsm8k/train/2", trial1_correct=True)
    sets, counts = curate_episodes([failed, bare, right], cfg(validation=0))
    rows = sets["rl_prompts"]["train"]
    assert [(r["episode_id"], r["instruction_id"]) for r in rows] == [
        (failed.id, "test-time"), (failed.id, "quick.calc.low"), (failed.id, "step.calc.high"),
        (bare.id, "test-time")]
    t1 = failed.trial1
    assert rows[0]["prompt"] == reflect_and_correct_prompt(t1.messages, t1.response, "incorrect",
                                                           GSM8K.answer_format)
    assert rows[1]["prompt"] == reflect_and_correct_prompt(t1.messages, t1.response, "incorrect",
                                                           GSM8K.answer_format, instruction="instruction quick.calc.low")
    assert "instruction quick.calc.low Then solve the problem again" in rows[1]["prompt"][-1]["content"]
    # The reward can be computed from the row alone: rebuild the problem, run the task's verifier.
    rl = RLPrompt.from_row("row", rows[0])
    assert rl.problem == failed.problem() and rl.task == "gsm8k"
    assert GSM8K.verify(rl.problem, "3 * 4 = 12. The answer is: 12").correct
    assert not GSM8K.verify(Problem(**rows[0]["problem"]), "The answer is: 7").correct
    assert counts["failed"] == 2 and counts["datasets"]["rl_prompts"]["per_instruction"]["test-time"] == 2
    # The cap keeps the test-time row; Parquet holds the problem as JSON and reads back the same.
    capped, _ = curate_episodes([failed], cfg(validation=0, max_per_problem=2))
    assert [r["instruction_id"] for r in capped["rl_prompts"]["train"]][0] == "test-time"
    assert len(capped["rl_prompts"]["train"]) == 2
    out = curate(CurateConfig(source=str(write_run(tmp_path / "run", [failed, bare])), validation=0))
    import pyarrow.parquet as pq

    (first, *_) = pq.read_table(out / "rl_prompts" / "train.parquet").to_pylist()
    assert RLPrompt.from_row("parquet", first) == RLPrompt.from_row("jsonl", rows[0])


def test_dpref_judge_free_fallback_prefers_the_shorter_reflection():
    ep = episode(reflections=[(OTHER, True, "a"), (GOOD, True, "b"), (BAD, False, "c")])
    sets, counts = curate_episodes([ep], cfg(validation=0))
    (pair,) = sets["dpo_preference"]["train"]
    shorter, longer = sorted([OTHER, GOOD], key=len)
    assert pair["chosen"][0]["content"] == shorter and pair["rejected"][0]["content"] == longer
    verdict = json.loads(pair["judge"])
    assert verdict["method"] == "fallback:shorter" and verdict["judge_model"] is None
    assert counts["judge"]["methods"] == {"fallback:shorter": 1}
    # D±: both positives against the one negative.
    assert sorted(r["chosen_reflection_index"] for r in sets["dpo_contrastive"]["train"]) == [0, 1]


def test_equal_length_tie_has_no_preference():
    a, b = "x" * 40 + " first idea about the multiplication", "y" * 40 + " other idea about the multiplication"
    assert len(a) == len(b)
    sets, counts = curate_episodes([episode(reflections=[(a, True, "a"), (b, True, "b")])], cfg(validation=0))
    assert sets["dpo_preference"]["train"] == [] and counts["judge"]["dropped_ties"] == 1


def test_judge_model_orders_pairs_and_keeps_its_verdicts(default_backend, tmp_path):
    from reflectevo.backends.cache import GenerationCache, Generator

    ep = episode(reflections=[(OTHER, True, "a"), (GOOD, True, "b")])
    judge = Generator(default_backend, GenerationCache(tmp_path / "judge.sqlite"))
    sets, counts = curate_episodes([ep], cfg(validation=0, judge_max_tokens=12), judge=judge)
    (pair,) = sets["dpo_preference"]["train"]
    verdict = json.loads(pair["judge"])
    assert verdict["judge_model"] == default_backend.model_id
    assert len(verdict["replies"]) == 2 and verdict["rubric"] == "reflectevo.judge/1"
    # Either both readings agreed, or the documented fallback decided (and says so).
    assert verdict["method"] in ("judge", "fallback:shorter")
    if verdict["method"] == "judge":
        winner = {"A": OTHER, "B": GOOD}[verdict["votes"][0]]
        assert pair["chosen"][0]["content"] == winner
    else:
        assert pair["chosen"][0]["content"] == min(OTHER, GOOD, key=len)


def test_parse_vote():
    from reflectevo.stages.judge import parse_vote

    assert parse_vote("A is vague, B names the step.\nBetter: B") == "B"
    assert parse_vote("**Better: A**") == "A"
    assert parse_vote("The better reflection is (A).") == "A"
    assert parse_vote("I cannot decide.") is None


def test_dedup_exact_and_near():
    near = GOOD.replace("I added", "I had added")
    ep = episode(reflections=[(GOOD, True, "a"), ("  " + GOOD.upper() + "  ", True, "b"), (near, True, "c"),
                              (OTHER, True, "d")])
    _, exact = curate_episodes([ep], cfg(dedup="exact"))
    assert exact["reflections_dropped"] == {"duplicate": 1} and exact["reflections_kept"] == 3
    _, near_counts = curate_episodes([ep], cfg(dedup="near", near_threshold=0.6))
    assert near_counts["reflections_dropped"] == {"duplicate": 1, "near_duplicate": 1}
    _, none = curate_episodes([ep], cfg(dedup="none"))
    assert none["reflections_kept"] == 4


def test_filters_are_a_named_ordered_list():
    """`filters` chooses and orders them; the first that drops a reflection names the reason."""
    ep = episode(reflections=[(GOOD, True, "a"), (GOOD, True, "b"), ("", True, "c")])
    _, default = curate_episodes([ep], cfg())
    assert default["reflections_dropped"] == {"duplicate": 1, "too_short": 1}
    _, no_dedup = curate_episodes([ep], cfg(filters=["too_short"]))
    assert no_dedup["reflections_dropped"] == {"too_short": 1} and no_dedup["reflections_kept"] == 2
    # an empty reflection is an exact duplicate of nothing kept, so the order only shows with a kept copy
    _, reordered = curate_episodes([ep], cfg(filters=["near_duplicate", "duplicate", "too_short"]))
    assert reordered["reflections_dropped"] == {"near_duplicate": 1, "too_short": 1}
    with pytest.raises(InputError, match=r"setting 'filters': unknown curation filter 'dedupe'; known curation "
                                         r"filters: cut_off, duplicate, near_duplicate, no_trial2"):
        curate_episodes([ep], cfg(filters=["dedupe"]))


def test_cut_off_reflections_are_counted_and_dropped_on_request():
    """A reflection cut by max_tokens is kept by default and counted; the `cut_off` filter drops it."""
    ep = episode(reflections=[(GOOD, True, "a"), (OTHER, True, "b"), (BAD, False, "c")])
    ep.reflections[0].finish_reason = ep.reflections[2].finish_reason = "length"
    sets, counts = curate_episodes([ep], cfg(validation=0))
    assert counts["cut_off"] == {"reflections": 2, "corrected": 1} and counts["reflections_kept"] == 3
    assert [r["reflection_index"] for r in sets["sft_reflect"]["train"]] == [0, 1]
    sets, counts = curate_episodes([ep], cfg(validation=0, filters=["cut_off", "too_short"]))
    assert counts["reflections_dropped"] == {"cut_off": 2} and counts["cut_off"] == {"reflections": 0, "corrected": 0}
    assert [r["reflection_index"] for r in sets["sft_reflect"]["train"]] == [1]
    assert sets["dpo_contrastive"]["train"] == []  # its only negative was cut


def test_dedup_keeps_the_copy_that_corrected_the_answer():
    ep = episode(reflections=[(GOOD, False, "a"), (GOOD, True, "b")])
    sets, _ = curate_episodes([ep], cfg(validation=0))
    assert [r["reflection_index"] for r in sets["sft_reflect"]["train"]] == [1]


def test_answer_leaks_are_dropped_by_answer_type():
    ep = episode()
    assert states_gold_answer(GSM8K, ep, "Multiply instead: the answer is 12.")
    assert states_gold_answer(GSM8K, ep, "Each box has 4 apples, so 3 boxes make 12")  # the extractor reads 12
    assert not states_gold_answer(GSM8K, ep, "Multiply the 3 boxes by the 4 apples instead of adding them.")
    # a value computed mid-text gives the answer away too, though the extractor reads only the last number
    assert states_gold_answer(GSM8K, ep, "3 boxes times 4, which is 12, but I wrote 7. So redo 3 x 4")
    assert states_gold_answer(GSM8K, ep, "3 * 4 = 12\n4 + 3 = 7")
    assert not states_gold_answer(GSM8K, ep, "Step 12 is wrong: multiply 3 by 4, not add them. Total = 120 is off")
    logiqa = get_task("logiqa")  # built without its data file: only verify() is used
    mcq = episode(task="logiqa", gold="B")
    assert states_gold_answer(logiqa, mcq, "So the correct answer should be B.")
    assert not states_gold_answer(logiqa, mcq, "I misread the passage; re-check each option against it.")
    text = episode(task="free", gold="the red house")
    assert states_gold_answer(None, text, "It must be the red house on the corner.")
    assert not states_gold_answer(None, text, "Look for the house colour in the passage.")
    leak = episode(reflections=[("The answer is 12, multiply.", True, "a"), (GOOD, True, "b")])
    # Off by default: the gold answer never reached the reflector, so re-deriving it is a correction;
    # curation still says how many kept reflections (and corrected ones) the filter would drop.
    _, kept = curate_episodes([leak], cfg(validation=0))
    assert kept["reflections_kept"] == 2 and kept["reflections_dropped"] == {}
    assert kept["answer_stating"] == {"filter": "off", "reflections": 1, "corrected": 1}
    sets, counts = curate_episodes([leak], cfg(validation=0, drop_answer_leaks=True))
    assert counts["reflections_dropped"] == {"states_answer": 1} and counts["answer_stating"]["filter"] == "on"
    assert [r["reflection_index"] for r in sets["sft_one_stage"]["train"]] == [1]
    # Imported paper files (whose stored prompts may hold the answer) get the filter by default.
    _, imported = curate_episodes([leak], cfg(validation=0), imported=True)
    assert imported["reflections_dropped"] == {"states_answer": 1}


def test_length_limits_and_cap_per_problem():
    ep = episode(reflections=[(GOOD, True, "a"), (OTHER, True, "b"), ("short", True, "c"),
                              (BAD, False, "d"), (BAD + " And again.", False, "e")])
    _, counts = curate_episodes([ep], cfg(min_chars=10, max_chars=len(GOOD)))
    assert counts["reflections_dropped"] == {"too_long": 2, "too_short": 1}
    sets, _ = curate_episodes([ep], cfg(max_per_problem=1, validation=0))
    assert all(len(sets[name]["train"]) == 1 for name in sets if name != "sft_self_train")
    again, _ = curate_episodes([ep], cfg(max_per_problem=1, validation=0))
    assert again == sets  # the capped choice is reproducible
    with pytest.raises(InputError, match="tokenizer"):
        curate_episodes([ep], cfg(max_tokens=10))


def test_split_is_by_problem_and_deterministic():
    rows = [{"episode_id": f"p{i}", "sample": s} for i in range(20) for s in range(3)]
    train, val = split_by_problem(rows, 0.2, seed=0)
    assert {r["episode_id"] for r in train}.isdisjoint({r["episode_id"] for r in val})
    assert len({r["episode_id"] for r in val}) == 4 and len(train) + len(val) == 60
    assert split_by_problem(rows, 0.2, seed=0) == (train, val)
    assert split_by_problem(rows, 0.2, seed=1)[1] != val
    assert split_by_problem(rows[:3], 0.2, seed=0) == (rows[:3], [])  # one problem: nothing to hold out


def test_unknown_task_takes_the_answer_format_from_the_stored_trial2_prompt():
    fmt = 'End with "Final: X".'
    ep = episode(task="my_custom_task", answer_format=fmt, reflections=[(GOOD, True, "a")])
    sets, _ = curate_episodes([ep], cfg(validation=0))
    assert sets["sft_one_stage"]["train"][0]["prompt"][-1]["content"].endswith(fmt)
    bare = episode(task="my_custom_task", reflections=[(GOOD, True, "a")])
    bare.reflections[0].trial2.messages = [{"role": "user", "content": "no format here"}]
    with pytest.raises(InputError, match="my_custom_task"):
        curate_episodes([bare], cfg())


def write_run(path: Path, episodes) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "episodes.jsonl").write_text(episodes_to_jsonl(episodes))
    return path


def test_curate_writes_loadable_jsonl_and_parquet(tmp_path):
    eps = [episode(eid=f"gsm8k/train/{i}", reflections=[(GOOD, True, "a"), (OTHER, True, "b"), (BAD, False, "c")])
           for i in range(4)]
    run = write_run(tmp_path / "run", eps)
    out = curate(CurateConfig(source=str(run), validation=0.25))
    assert out == run / "curated"
    summary = json.loads((out / "curation.json").read_text())
    assert summary["datasets"]["sft_reflect"] == {
        "train": 6, "validation": 2, "problems": {"train": 3, "validation": 1},
        "per_task": {"gsm8k": 8}, "per_instruction": {"a": 4, "b": 4}}
    for name in ("sft_one_stage", "sft_reflect", "sft_correct", "dpo_contrastive", "dpo_preference"):
        for fmt in ("json", "parquet"):
            ds = load_curated(out / name, fmt)
            assert set(ds) == {"train", "validation"}
            columns = set(ds["train"].column_names)
            assert {"prompt", "task", "episode_id"} <= columns
            assert ({"completion", "reflection_index", "instruction_id"} <= columns if name.startswith("sft")
                    else {"chosen", "rejected", "chosen_reflection_index", "rejected_instruction_id"} <= columns)
        from datasets import load_dataset

        plain = load_dataset("json", data_files={"train": str(out / name / "train.jsonl"),
                                                 "validation": str(out / name / "validation.jsonl")})
        assert plain["train"][0]["prompt"][0]["role"] == "user"
    val_ids = {r["episode_id"] for r in load_curated(out / "sft_correct")["validation"]}
    train_ids = {r["episode_id"] for r in load_curated(out / "sft_correct")["train"]}
    assert val_ids and val_ids.isdisjoint(train_ids)


def test_bad_input_is_one_line_and_keeps_previous_outputs(tmp_path):
    run = write_run(tmp_path / "run", [episode(reflections=[(GOOD, True, "a")])])
    runner = CliRunner()
    ok = runner.invoke(app, ["curate", str(run), "--validation", "0"])
    assert ok.exit_code == 0, ok.output
    before = (run / "curated" / "sft_reflect" / "train.jsonl").read_text()
    (run / "episodes.jsonl").write_text('{"schema": "reflectevo.episode/1", "id": "x"}\n')
    bad = runner.invoke(app, ["curate", str(run)])
    assert bad.exit_code == 2 and "episodes.jsonl:1" in bad.output and "task" in bad.output
    assert (run / "curated" / "sft_reflect" / "train.jsonl").read_text() == before
    (run / "episodes.jsonl").write_text(episodes_to_jsonl([episode(reflections=[(BAD, False, "a")])]))
    reflection_sets = "sft_one_stage,sft_reflect,sft_correct,dpo_contrastive,dpo_preference"
    empty = runner.invoke(app, ["curate", str(run), "--datasets", reflection_sets])
    assert empty.exit_code == 2 and "produced no rows" in empty.output
    # No reflection corrected anything, but the failure is still a prompt for setting V (RL), written by default.
    rl_only = runner.invoke(app, ["curate", str(run), "--out", str(tmp_path / "rl")])
    assert rl_only.exit_code == 0 and "no rows for sft_one_stage" in " ".join(rl_only.output.split())
    # one row with the test-time prompt, one with the instruction its reflection was generated with
    assert (tmp_path / "rl" / "rl_prompts" / "train.jsonl").read_text().count("\n") == 2
    wrong = tmp_path / "other.jsonl"
    wrong.write_text('{"hello": 1}\n')
    kind = runner.invoke(app, ["curate", str(wrong)])
    assert kind.exit_code == 2 and f"{wrong}:1" in kind.output
    unknown = runner.invoke(app, ["curate", str(run), "--datasets", "sft,dpo"])
    assert unknown.exit_code == 2 and "unknown dataset" in unknown.output


# ---------------------------------------------------------------------------------------- real run

@pytest.fixture(scope="session")
def real_run(tmp_path_factory):
    """A real generation run: SmolLM2-135M on 2 GSM8K problems, 2 reflections per failure, tiny limits."""
    from reflectevo.config import GenerateConfig
    from reflectevo.stages.generate import generate

    out = tmp_path_factory.mktemp("real_run")
    generate(GenerateConfig(task="gsm8k", split="train", limit=2, out=str(out), engine="hf",
                            max_tokens=12, reflection_max_tokens=12, num_instructions=1, samples=2,
                            cache=str(out / "cache.sqlite")))
    return out


def test_curate_real_episodes(real_run, tmp_path):
    episodes = read_episodes(real_run / "episodes.jsonl")
    failed = [ep for ep in episodes if not ep.trial1.verdict.correct]
    assert failed, "the 135M model fails some GSM8K problems"
    sets, counts = curate_episodes(episodes, cfg(drop_answer_leaks=False, dedup="none", validation=0.5))
    assert counts["reflections"] == sum(len(ep.reflections) for ep in failed)
    positives = {(ep.id, r.index) for ep in failed for r in ep.reflections if r.trial2.verdict.correct}
    negatives = {(ep.id, r.index) for ep in failed for r in ep.reflections if not r.trial2.verdict.correct}
    by_id = {ep.id: ep for ep in episodes}
    sft = [r for part in sets["sft_correct"].values() for r in part]
    assert {(r["episode_id"], r["reflection_index"]) for r in sft} == positives
    for row in sft:  # stage 2 trains on exactly the prompt the generator saw
        refl = by_id[row["episode_id"]].reflections[row["reflection_index"]]
        assert row["prompt"] == refl.trial2.messages and row["completion"][0]["content"] == refl.trial2.response
    pairs = [r for part in sets["dpo_contrastive"].values() for r in part]
    assert len(pairs) == sum(
        sum(r.trial2.verdict.correct for r in ep.reflections) * sum(not r.trial2.verdict.correct for r in ep.reflections)
        for ep in failed)
    for row in pairs:
        assert (row["episode_id"], row["chosen_reflection_index"]) in positives
        assert (row["episode_id"], row["rejected_reflection_index"]) in negatives
    # The CLI on the real run directory: rows (setting V's prompts at least: some trial 1 failed), or the clear
    # "no rows" error for the reflection sets when nothing was corrected.
    result = CliRunner().invoke(app, ["curate", str(real_run), "--out", str(tmp_path / "cur"),
                                      "--keep-answer-leaks", "--dedup", "none"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cur" / "curation.json").read_text())["reflections"] == counts["reflections"]
    assert len(load_curated(tmp_path / "cur" / "rl_prompts")["train"]) >= 1
    reflection_sets = CliRunner().invoke(app, ["curate", str(real_run), "--out", str(tmp_path / "cur2"),
                                               "--keep-answer-leaks", "--dedup", "none", "--datasets",
                                               "sft_one_stage,sft_reflect,sft_correct,dpo_contrastive"])
    if positives:
        assert reflection_sets.exit_code == 0, reflection_sets.output
    else:
        assert reflection_sets.exit_code == 2 and "produced no rows" in reflection_sets.output


@pytest.mark.slow
def test_cli_judge_loads_any_model_through_a_backend(tmp_path):
    run = write_run(tmp_path / "run", [episode(reflections=[(OTHER, True, "a"), (GOOD, True, "b")])])
    result = CliRunner().invoke(app, ["curate", str(run), "--validation", "0", "--judge", "smollm2-135m",
                                      "--judge-engine", "hf", "--cache", str(tmp_path / "c.sqlite")])
    assert result.exit_code == 0, result.output
    (pair,) = load_curated(run / "curated" / "dpo_preference")["train"]
    verdict = json.loads(pair["judge"])
    assert verdict["judge_model"].startswith("smollm2-135m@") and len(verdict["replies"]) == 2
    summary = json.loads((run / "curated" / "curation.json").read_text())["judge"]
    assert summary["judge"] == verdict["judge_model"] and summary["ordered"] == 1


def test_self_training_control_matches_the_reflection_rows():
    """sft_self_train: right trial-1 answers only, as many train/validation rows as sft_one_stage."""
    failures = [episode(eid=f"gsm8k/train/{i}", reflections=[(GOOD + f" ({i})", True, "a"), (BAD, False, "b")])
                for i in range(6)]
    right = [episode(eid=f"gsm8k/train/r{i}", trial1_correct=True) for i in range(10)]
    sets, counts = curate_episodes(failures + right, cfg(validation=0.34))
    one, control = sets["sft_one_stage"], sets["sft_self_train"]
    assert (len(control["train"]), len(control["validation"])) == (len(one["train"]), len(one["validation"])) == (4, 2)
    ids = {s: [r["episode_id"] for r in control[s]] for s in control}
    assert set(ids["train"]) | set(ids["validation"]) <= {ep.id for ep in right}
    assert not set(ids["train"]) & set(ids["validation"])  # whole problems on one side
    by_id = {ep.id: ep for ep in right}
    for row in control["train"] + control["validation"]:
        ep = by_id[row["episode_id"]]
        assert row["prompt"] == ep.trial1.messages  # the trial-1 prompt: no failure, feedback or reflection
        assert row["completion"] == [{"role": "assistant", "content": ep.trial1.response}]
        assert row["split"] == "train" and row["reflection_index"] is None
    assert counts["datasets"]["sft_self_train"]["train"] == 4
    # Fewer right answers than reflection rows: all of them, no more.
    few, _ = curate_episodes(failures + right[:3], cfg(validation=0.34))
    assert len(few["sft_self_train"]["train"]) == 3 and few["sft_self_train"]["validation"] == []


def test_test_split_episodes_are_refused_unless_allowed(tmp_path):
    ep = episode(eid="gsm8k/test/0", reflections=[(GOOD, True, "a")])
    ep.split = "test"
    source = tmp_path / "episodes.jsonl"
    source.write_text(episodes_to_jsonl([ep, episode(reflections=[(GOOD, True, "a")])]))
    with pytest.raises(InputError, match=r"episodes.jsonl: 1 of 2 episodes are from the 'test' split \(e.g. "
                                         r"gsm8k/test/0\).*--allow-test-split"):
        curate(CurateConfig(source=str(source), out=str(tmp_path / "curated")))
    assert not (tmp_path / "curated").exists()
    result = CliRunner().invoke(app, ["curate", str(source), "--out", str(tmp_path / "c2"), "--allow-test-split",
                                      "--validation", "0"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "c2" / "sft_one_stage" / "train.jsonl").open()]
    assert sorted(r["split"] for r in rows) == ["test", "train"]  # rows carry their split for `train` to check
