"""`reflectevo stats`: exact figures on hand-made episodes, the paper's raw layout, curated sets, plots."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.records import episodes_to_jsonl
from reflectevo.report.stats import episode_stats, run_stats
from test_curate import BAD, GOOD, OTHER, episode

PNG = b"\x89PNG\r\n\x1a\n"


def hand_made():
    return [episode("gsm8k/train/0", [(GOOD, True, "a"), (BAD, False, "b")]),
            episode("gsm8k/train/1", [(OTHER, False, "a"), (BAD, False, "b")]),
            episode("gsm8k/train/2", trial1_correct=True),
            episode("other/test/0", task="other", reflections=[(GOOD, True, "a")])]


def test_episode_statistics_are_exact():
    stats = episode_stats(hand_made())
    gsm = stats["tasks"]["gsm8k"]
    assert (gsm["problems"], gsm["trial1_correct"], gsm["failures"], gsm["reflections"]) == (3, 1, 2, 4)
    assert gsm["trial2_correct"] == 1 and gsm["corrected_share"] == 0.25 and gsm["failures_corrected"] == 1
    reflections = [GOOD, BAD, OTHER, BAD]
    assert gsm["lengths"]["reflection"]["words"] == round(sum(len(t.split()) for t in reflections) / 4, 1)
    assert gsm["lengths"]["reflection"]["chars"] == round(sum(map(len, reflections)) / 4, 1)
    assert gsm["lengths"]["question"]["n"] == 3 and gsm["lengths"]["turn2"]["n"] == 4
    assert stats["instructions"] == {"a": {"reflections": 3, "corrected": 2, "success_rate": round(2 / 3, 4)},
                                     "b": {"reflections": 2, "corrected": 0, "success_rate": 0.0}}
    assert stats["total"] == {"problems": 4, "failures": 3, "reflections": 5, "trial2_correct": 2,
                              "corrected_share": 0.4}


def test_stats_of_the_paper_raw_file(paper_examples, tmp_path):
    stats, plots, out = run_stats(paper_examples / "example_Reflection_raw.jsonl", tmp_path / "s")
    paper = stats["tasks"]["paper"]
    # 5 problems, all wrong at trial 1, two reflections each; 4 trials 2 right, fixing 3 of the problems.
    assert (paper["problems"], paper["failures"], paper["reflections"], paper["trial2_correct"]) == (5, 5, 10, 4)
    assert paper["failures_corrected"] == 3 and paper["corrected_share"] == 0.4
    assert {p.name for p in plots} == {"samples_per_task.png", "lengths.png", "instructions.png"}
    assert all(p.read_bytes().startswith(PNG) and p.stat().st_size > 5000 for p in plots)
    assert json.loads((out / "stats.json").read_text())["tasks"]["paper"]["reflections"] == 10


def test_stats_cli_on_a_run_and_its_curated_sets(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.jsonl").write_text(episodes_to_jsonl(hand_made()))
    runner = CliRunner()
    result = runner.invoke(app, ["stats", str(run)])
    assert result.exit_code == 0, result.output
    assert "gsm8k" in result.output and "success per instruction" in result.output
    assert (run / "stats" / "instructions.png").read_bytes().startswith(PNG)
    assert runner.invoke(app, ["curate", str(run), "--validation", "0"]).exit_code == 0
    result = runner.invoke(app, ["stats", str(run / "curated"), "--out", str(tmp_path / "cs")])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "cs" / "stats.json").read_text())
    assert stats["datasets"]["sft_reflect"]["rows"] == 2
    assert stats["datasets"]["dpo_contrastive"]["rows"] == 1
    assert stats["datasets"]["sft_reflect"]["per_task"] == {"gsm8k": 1, "other": 1}
    assert (tmp_path / "cs" / "rows_per_dataset.png").read_bytes().startswith(PNG)
    one = runner.invoke(app, ["stats", str(run / "curated" / "sft_reflect" / "train.parquet"),
                              "--out", str(tmp_path / "one")])
    assert one.exit_code == 0, one.output
    assert json.loads((tmp_path / "one" / "stats.json").read_text())["datasets"]["sft_reflect"]["rows"] == 2


@pytest.mark.parametrize("content, message", [
    ('{"x": 1}\n', ":1: not an episode, a curated row or a paper record"),
    ('{"x": 1\n', ":2: malformed JSON"),
    ("", "empty file"),
])
def test_stats_bad_input(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    result = CliRunner().invoke(app, ["stats", str(path)])
    assert result.exit_code == 2 and message in result.output
    assert str(path) in result.output
