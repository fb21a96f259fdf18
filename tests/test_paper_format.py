"""The paper's layouts: reading, importing as episodes, curating them, and exporting ours back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.errors import InputError
from reflectevo.formats.paper import (export_raw, import_episodes, read_json_objects, read_paper_raw,
                                      strip_observation)
from reflectevo.records import read_episodes
from reflectevo.stages.curate import CurateConfig, curate
from training_data import load_curated


@pytest.fixture(scope="module")
def examples(paper_examples) -> Path:
    """tests/data/paper: synthetic records in the paper's example layouts (raw: 5, D+: 3, D±: 4, Dpref: 4)."""
    return paper_examples


def paper_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_read_concatenated_pretty_json_with_line_numbers(examples):
    path = examples / "example_Reflection_raw.jsonl"
    objects = list(read_json_objects(path))
    lines = path.read_text().splitlines()
    assert len(objects) == 5
    for line, obj in objects:  # each object starts on the line we report
        assert lines[line - 1] == "{" and obj["question"]
    # JSONL reads the same way.
    assert [o for _, o in read_json_objects(examples / "example_D+.jsonl")] == paper_rows(examples / "example_D+.jsonl")


def test_read_paper_raw(examples):
    records = read_paper_raw(examples / "example_Reflection_raw.jsonl")
    assert [r.id for r in records] == [3, 8, 9, 12, 15]
    first = records[0]
    assert first.answer == "a" and first.trial1.answer == "B" and not first.trial1.correct
    assert len(first.second_trials) == 2 and all(t.correct for t in first.second_trials)
    assert first.second_trials[0].reflection.startswith("1.  The response focused too narrowly")
    assert first.trial1.response.endswith("Action: Finish[B]")  # the pasted verdict is stripped
    assert "Observation" in first.trial1.reasoning  # ... but kept in the raw field
    assert sum(any(t.correct for t in r.second_trials) for r in records) == 3
    assert sum(t.correct for r in records for t in r.second_trials) == 4
    # Record 9: trial 1 gave no answer (an invalid action), so its generated_answer is empty.
    assert records[2].trial1.answer == "" and not records[2].trial1.correct
    assert [t.correct for t in records[3].second_trials] == [False, True]  # only the second trial 2 fixed it


def test_import_raw_as_episodes(examples):
    episodes = import_episodes(examples / "example_Reflection_raw.jsonl", task="logiqa")
    assert len(episodes) == 5
    ep = episodes[0]
    assert ep.id == "logiqa/paper/3" and ep.gold == "A"  # choice letters upper-cased like our verifier
    assert ep.trial1.verdict.extracted == "B" and not ep.trial1.verdict.correct
    assert [r.trial2.verdict.correct for r in ep.reflections] == [True, True]
    assert all("Answer is" not in r.trial2.response for r in ep.reflections)
    # Our correction prompt holds the original failed trial 1 and the reflection, never the paper's
    # rebuilt prompt with the model's own second answer.
    t2 = ep.reflections[0].trial2.messages
    assert t2[1] == {"role": "assistant", "content": ep.trial1.response}
    assert ep.reflections[0].text.strip() in t2[-1]["content"] and "CORRECT" not in t2[-1]["content"]


def test_import_d_plus_keeps_the_paper_prompts(examples):
    rows = paper_rows(examples / "example_D+.jsonl")
    episodes = import_episodes(examples / "example_D+.jsonl")
    assert len(episodes) == 3 and episodes[0].task == "paper"
    for ep, row in zip(episodes, rows):
        assert ep.trial1.messages == [{"role": "user", "content": row["reason_prompt"][0]}]
        (r,) = ep.reflections
        assert r.text == row["reflections"] and r.messages[0]["content"] == row["reflect_prompt"]
        assert r.trial2.verdict.correct and r.trial2.verdict.extracted == row["second_trial_answer"]


def test_d_pm_rows_merge_into_one_episode_per_failed_trial(examples):
    rows = paper_rows(examples / "example_D+-.jsonl")
    (ep,) = import_episodes(examples / "example_D+-.jsonl")
    texts = {r.text: r.trial2.verdict.correct for r in ep.reflections}
    assert len(rows) == 4 and len(ep.reflections) == len(texts) == 5  # 2 chosen and 3 rejected texts, reused
    assert len(texts) == len({row["reflection_chosen"] for row in rows} | {row["reflection_rejected"] for row in rows})
    assert all(texts[row["reflection_chosen"]] and not texts[row["reflection_rejected"]] for row in rows)
    assert "preferences" not in ep.meta


def test_curated_dpref_from_paper_keeps_the_paper_order(examples, tmp_path):
    rows = paper_rows(examples / "example_Dpref.jsonl")
    out = curate(CurateConfig(source=str(examples / "example_Dpref.jsonl"), out=str(tmp_path / "cur"),
                              validation=0, dedup="none"))
    pairs = load_curated(out / "dpo_preference")["train"]
    got = {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs}
    assert got == {(row["reflection_chosen"], row["reflection_rejected"]) for row in rows}
    assert {json.loads(p["judge"])["method"] for p in pairs} == {"imported"}
    assert not (examples / "example_Dpref_curated").exists() and not (examples / "curated").exists()


def test_export_round_trip(examples, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["import", str(examples / "example_D+.jsonl"), "--out", str(run), "--task", "logiqa"])
    assert result.exit_code == 0, result.output
    assert len(read_episodes(run / "episodes.jsonl")) == 3
    assert runner.invoke(app, ["curate", str(run), "--validation", "0"]).exit_code == 0
    result = runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "paper")])
    assert result.exit_code == 0, result.output
    exported = paper_rows(tmp_path / "paper" / "d_plus.jsonl")
    original = paper_rows(examples / "example_D+.jsonl")
    assert sorted(set(exported[0])) == sorted(set(original[0]))  # the paper's field layout
    assert sorted(r["reflections"] for r in exported) == sorted(r["reflections"] for r in original)
    assert sorted(r["second_trial_answer"] for r in exported) == sorted(r["second_trial_answer"] for r in original)
    raw = read_paper_raw(tmp_path / "paper" / "reflection_raw.jsonl")  # our raw export reads back
    assert len(raw) == 3 and all(len(r.second_trials) == 1 and r.second_trials[0].correct for r in raw)
    assert raw[0].trial1.response == strip_observation(original[0]["first_trial_reasoning"])


def test_export_pairs_from_curated_sets(examples, tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["import", str(examples / "example_D+-.jsonl"), "--out", str(run)]).exit_code == 0
    assert runner.invoke(app, ["curate", str(run), "--validation", "0", "--dedup", "none"]).exit_code == 0
    assert runner.invoke(app, ["export", str(run), "--out", str(tmp_path / "paper")]).exit_code == 0
    pm = paper_rows(tmp_path / "paper" / "d_pm.jsonl")
    original = paper_rows(examples / "example_D+-.jsonl")
    assert set(pm[0]) == set(original[0])
    # Every pair of the paper is among ours (we pair every chosen with every rejected reflection).
    ours = {(r["reflection_chosen"], r["reflection_rejected"]) for r in pm}
    assert len(ours) == 2 * 3
    assert {(r["reflection_chosen"], r["reflection_rejected"]) for r in original} <= ours


def test_raw_export_is_concatenated_pretty_json(tmp_path, examples):
    episodes = import_episodes(examples / "example_Reflection_raw.jsonl")
    text = export_raw(episodes)
    assert text.startswith("{\n    ")
    path = tmp_path / "raw.jsonl"
    path.write_text(text)
    assert [r.question for r in read_paper_raw(path)] == [ep.question for ep in episodes]


def test_bad_paper_files(tmp_path, examples):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{\n  "question": "q",\n  "answer": "a",\n  "output": [\n    {"trial": 1,\n}\n')
    with pytest.raises(InputError, match=r"broken.jsonl:6: malformed JSON"):
        read_paper_raw(broken)
    missing = tmp_path / "missing.jsonl"
    row = paper_rows(examples / "example_D+.jsonl")[0]
    del row["second_trial_reasoning"]
    missing.write_text(json.dumps(paper_rows(examples / "example_D+.jsonl")[1]) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(InputError, match=r"missing.jsonl:2: not a ReflectEvo paper record"):
        import_episodes(missing)
    pair = paper_rows(examples / "example_Dpref.jsonl")[0]
    del pair["second_trial_reasoning_rejected"]
    (tmp_path / "pair.jsonl").write_text(json.dumps(pair) + "\n")
    with pytest.raises(InputError, match=r"pair.jsonl:1: missing field 'second_trial_reasoning_rejected'"):
        import_episodes(tmp_path / "pair.jsonl")
    with pytest.raises(InputError, match=r"D\+.jsonl:1: not a raw ReflectEvo record"):
        read_paper_raw(examples / "example_D+.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(InputError, match="no records"):
        import_episodes(tmp_path / "empty.jsonl")
    result = CliRunner().invoke(app, ["import", str(broken), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "broken.jsonl:6" in result.output
    assert not (tmp_path / "run" / "episodes.jsonl").exists()


def test_imported_rows_repeat_the_paper_answer_format(examples):
    from reflectevo.formats.paper import PAPER_ANSWER_FORMAT
    from reflectevo.stages.curate import curate_episodes

    episodes = import_episodes(examples / "example_D+.jsonl", task="logiqa")
    sets, _ = curate_episodes(episodes, CurateConfig(source="unused", validation=0))
    for row in sets["sft_one_stage"]["train"]:
        assert row["prompt"][-1]["content"].endswith(PAPER_ANSWER_FORMAT)
        assert "Finish[" in row["completion"][0]["content"]


def test_raw_trial_without_reasoning_names_the_trial(tmp_path):
    path = tmp_path / "raw.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a", "output": [{"trial": 1}]}) + "\n")
    with pytest.raises(InputError, match=r"raw.jsonl:1: output\[0\] needs a 'reasoning'"):
        read_paper_raw(path)
