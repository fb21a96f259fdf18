"""The self-evolution loop: plan, plateau rule, bad settings, and (slow) a real tiny loop that resumes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reflectevo.config import build
from reflectevo.errors import InputError
from reflectevo.stages.evolve import EvolveConfig, evolve, improved, is_done, mark_done, plan, step_key
from training_data import curated_dir  # noqa: F401  (session fixture)


def config(tmp_path, **extra) -> EvolveConfig:
    return build(EvolveConfig, {"task": "arith", "out": str(tmp_path / "loop"), **extra})


def test_plan_chains_each_trained_model_into_the_next_iteration(tmp_path):
    steps = plan(config(tmp_path, iterations=2, setting="II"))
    assert [(s["iteration"], s["stage"]) for s in steps] == [
        (0, "validate"), (0, "evaluate"), (1, "generate"), (1, "curate"), (1, "train"), (1, "validate"),
        (1, "evaluate"), (2, "generate"), (2, "curate"), (2, "train"), (2, "validate"), (2, "evaluate")]
    # Generation reads train, decisions read validation, the test split only reports.
    assert {s["split"] for s in steps if s["stage"] == "generate"} == {"train"}
    assert {s["split"] for s in steps if s["stage"] == "validate"} == {"validation"}
    assert {s["split"] for s in steps if s["stage"] == "evaluate"} == {"test"}
    trained_1 = steps[5]["models"]
    assert trained_1["reflector"].endswith("iter_1/train/stage1/model")
    assert trained_1["generator"].endswith("iter_1/train/stage2/model")
    assert steps[7]["models"] == trained_1  # iteration 2 generates with iteration 1's models
    assert steps[9]["from"] == trained_1["generator"]
    assert len({s["key"] for s in steps}) == len(steps)


def test_step_hash_chains_settings_and_inputs(tmp_path):
    base = {s["out"]: s["key"] for s in plan(config(tmp_path, iterations=2))}
    # A changed training setting changes that step and every step after it, and nothing before it.
    changed = {s["out"]: s["key"] for s in plan(config(tmp_path, iterations=2, train={"epochs": 1}))}
    differs = sorted(out.split("loop/")[1] for out in base if base[out] != changed[out])
    assert differs == ["iter_1/evaluate", "iter_1/train", "iter_1/validate", "iter_2/curate", "iter_2/evaluate",
                       "iter_2/generate", "iter_2/train", "iter_2/validate"]
    # The cache's location decides nothing about the outputs.
    assert {s["out"]: s["key"] for s in plan(config(tmp_path, iterations=2, cache="/elsewhere.sqlite"))} == base


def test_outputs_of_other_settings_are_moved_aside_not_reused(tmp_path):
    folder = tmp_path / "step"
    folder.mkdir()
    (folder / "episodes.jsonl").write_text("old\n")
    assert not is_done(folder, "episodes.jsonl", "k1")  # no record of its settings: redone
    assert not folder.exists() and (tmp_path / "step.stale-unstamped" / "episodes.jsonl").read_text() == "old\n"
    folder.mkdir()
    (folder / "episodes.jsonl").write_text("new\n")
    cfg = config(tmp_path)
    mark_done(folder, step_key(cfg), cfg)
    assert is_done(folder, "episodes.jsonl", step_key(cfg))
    other = config(tmp_path, iterations=5)
    assert not is_done(folder, "episodes.jsonl", step_key(other))
    assert (tmp_path / f"step.stale-{step_key(cfg)[:8]}" / "episodes.jsonl").read_text() == "new\n"
    folder.mkdir()  # an interrupted run of the same step (no output yet) resumes in place
    assert not is_done(folder, "episodes.jsonl", step_key(other)) and folder.is_dir()


@pytest.mark.parametrize("scores, patience, expected", [
    ([0.2], 1, True), ([0.2, 0.3], 1, True), ([0.2, 0.2], 1, False), ([0.3, 0.2], 1, False),
    ([0.2, 0.1, 0.25], 2, True), ([0.2, 0.1, 0.15], 2, False), ([0.2, 0.21], 1, True)])
def test_plateau_rule(tmp_path, scores, patience, expected):
    history = [{"score": s} for s in scores]
    assert improved(history, config(tmp_path, patience=patience)) is expected


def test_min_delta(tmp_path):
    assert not improved([{"score": 0.2}, {"score": 0.21}], config(tmp_path, min_delta=0.05))


def test_bad_stage_setting_fails_before_any_work(tmp_path):
    with pytest.raises(InputError, match="setting 'train.lora_r': Input should be greater than or equal to 1"):
        evolve(config(tmp_path, train={"lora_r": 0}), dry_run=True)
    with pytest.raises(InputError, match="setting 'generate.max_tokenz': not a setting of GenerateConfig"):
        config(tmp_path, generate={"max_tokenz": 8})
    with pytest.raises(InputError, match="has no split 'dev'"):
        evolve(config(tmp_path, test_split="dev"))
    with pytest.raises(InputError, match="only reports; it cannot be the train_split or the validation_split"):
        evolve(config(tmp_path, validation_split="test", test_split="validation"))
    with pytest.raises(InputError, match="evolve: evaluate: setting 'split' is the loop's own"):
        evolve(config(tmp_path, evaluate={"split": "test"}))
    with pytest.raises(InputError, match="has no split 'train'.*the data file"):
        evolve(config(tmp_path, task="bigbench", data=str(tmp_path / "rows.jsonl")))
    assert not (tmp_path / "loop").exists()


def test_dry_run_prints_the_plan_from_one_yaml_file(tmp_path):
    yaml_file = tmp_path / "loop.yaml"
    yaml_file.write_text("evolve:\n  task: arith\n  setting: III\n  iterations: 3\n  train:\n    beta: 0.1\n")
    proc = subprocess.run([sys.executable, "-m", "reflectevo.cli", "evolve", "--config", str(yaml_file), "--out",
                           str(tmp_path / "loop"), "--dry-run"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    shown = proc.stdout + proc.stderr
    assert "setting III" in shown and "up to 3 iterations" in shown
    stages = re.findall(r"│ (generate|curate|train|validate|evaluate) +│", shown)
    assert stages.count("generate") == 3 and stages.count("evaluate") == 4 and stages.count("train") == 3
    assert stages.count("validate") == 4
    assert not (tmp_path / "loop").exists()  # a dry run writes nothing


def test_quickstart_preset_is_a_valid_loop_on_a_built_in_task(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "reflectevo.cli", "quickstart", "--out", str(tmp_path / "qs"),
                           "--dry-run"], capture_output=True, text=True, timeout=120,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    stages = re.findall(r"│ (generate|curate|train|validate|evaluate) +│", proc.stdout + proc.stderr)
    assert stages == ["validate", "evaluate", "generate", "curate", "train", "validate", "evaluate"]
    assert not (tmp_path / "qs").exists()


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid_loops(tmp_path, path):
    """configs/ holds the README's reproducible runs: each must stay a loop the current config accepts
    (every field name and value checked), planned without weights (the Qwen extras are not in CI)."""
    proc = subprocess.run([sys.executable, "-m", "reflectevo.cli", "evolve", "--config", str(path),
                           "--out", str(tmp_path / "loop"), "--dry-run"], capture_output=True, text=True,
                          timeout=120, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    stages = re.findall(r"│ (generate|curate|train|validate|evaluate) +│", proc.stdout + proc.stderr)
    assert stages.count("generate") >= 1 and stages[0] == "validate" and stages[-1] == "evaluate"
    assert not (tmp_path / "loop").exists()


def tiny(tmp_path, cache_path, **extra) -> EvolveConfig:
    return config(tmp_path, iterations=1, train_limit=4, validation_limit=3, test_limit=3, cache=str(cache_path),
                  generate={"max_tokens": 24, "reflection_max_tokens": 16, "num_instructions": 1, "samples": 2},
                  curate={"validation": 0.0, "dedup": "none"},
                  train={"max_steps": 2, "batch_size": 2, "max_length": 384, "logging_steps": 1},
                  evaluate={"max_tokens": 24, "reflection_max_tokens": 16, "self_check_max_tokens": 8,
                            "bootstrap": 100}, **extra)


@pytest.mark.slow
def test_tiny_real_loop_trains_evaluates_and_resumes(tmp_path, cache_path, curated_dir):
    """Generation is real; the curated sets are planted (the 135M model rarely corrects itself on a few
    problems), which also shows that a finished step is never redone."""
    cfg = tiny(tmp_path, cache_path)
    loop = tmp_path / "loop"
    shutil.copytree(curated_dir, loop / "iter_1" / "curate")
    (loop / "iter_1" / "curate" / "curation.json").write_text("{}")
    from reflectevo.stages.evolve import curate_config

    curate_step = next(s for s in plan(cfg) if s["stage"] == "curate")
    mark_done(loop / "iter_1" / "curate", curate_step["key"], curate_config(cfg, 1))  # planted as if curated
    report = evolve(cfg)
    summary = json.loads((loop / "evolve.json").read_text())
    assert [h["iteration"] for h in summary["history"]] == [0, 1]
    assert summary["decided_on"] == "validation" and summary["ship"]["why"]
    for h in summary["history"]:
        assert h["score"] == h["validation"]["score"]  # decisions read validation
        assert json.loads(open(h["test"]["results"]).read())["split"] == "test"
        assert json.loads(open(h["validation"]["results"]).read())["split"] == "validation"
    assert (loop / "iter_1" / "generate" / "episodes.jsonl").is_file()
    lineage = json.loads((loop / "iter_1" / "lineage.json").read_text())
    assert lineage["models"]["generator"] == str(loop / "iter_1" / "train" / "model")
    assert lineage["from_models"]["generator"] == "smollm2-135m"
    results = json.loads((loop / "iter_1" / "evaluate" / "results.json").read_text())
    assert results["models"]["generator"]["model"] == lineage["models"]["generator"]
    assert results["mode"] == "one-stage"
    assert report.is_file() and "iter_1" in report.read_text()
    # A rerun finds every step done and only rewrites the summary.
    started = time.time()
    evolve(cfg)
    assert time.time() - started < 120
    assert json.loads((loop / "evolve.json").read_text())["history"] == summary["history"]
    # A damaged result is one line naming the file, not a traceback.
    (loop / "iter_0" / "evaluate" / "results.json").write_text("{not json")
    with pytest.raises(InputError, match=r"iter_0/evaluate/results.json: cannot read this evaluation's results"):
        evolve(cfg)


@pytest.mark.slow
def test_loop_stops_cleanly_when_an_iteration_has_nothing_to_learn(tmp_path, cache_path):
    cfg = tiny(tmp_path, cache_path, setting="IV")  # Dpref needs two corrections of one failure: none here
    evolve(cfg)
    summary = json.loads((tmp_path / "loop" / "evolve.json").read_text())
    assert summary["stopped"].startswith("iteration 1 had nothing to learn from")
    assert [h["iteration"] for h in summary["history"]] == [0]
    assert summary["best"]["models"]["generator"] == "smollm2-135m"


def test_damaged_results_are_one_line_naming_the_file(tmp_path):
    from reflectevo.stages.evolve import read_results

    path = tmp_path / "iter_0" / "evaluate" / "results.json"
    path.parent.mkdir(parents=True)
    for damage in ("{not json", '{"metrics": {}}', "[1, 2]", ""):
        path.write_text(damage)
        with pytest.raises(InputError, match=r"iter_0/evaluate/results.json: cannot read this evaluation's results"):
            read_results(path)


def test_setting_V_is_evaluated_like_setting_I_and_needs_rl_prompts(tmp_path):
    """Setting V's model answers in one reply (reflection + corrected answer): evaluated in one-stage mode;
    an iteration whose curation left rl_prompts empty has nothing to learn (before any model loads)."""
    from reflectevo.stages.evolve import (Models, NothingToLearn, curate_config, evaluate_config, generate_config,
                                          run_iteration)
    from reflectevo.training import SETTINGS

    assert SETTINGS.get("V").obj.evaluation == "one-stage" and SETTINGS.get("III").obj.evaluation == "two-stage"
    cfg = config(tmp_path, setting="V", iterations=1)
    steps = plan(cfg)
    trained = next(s for s in steps if s["stage"] == "validate" and s["iteration"] == 1)["models"]
    assert trained["generator"] == trained["reflector"] and trained["generator"].endswith("iter_1/train/model")
    models = Models(generator="smollm2-135m", reflector="smollm2-135m")
    assert evaluate_config(cfg, 1, models, "validation").mode == "one-stage"
    assert evaluate_config(config(tmp_path, setting="III"), 1, models).mode == "two-stage"
    keys = {s["out"]: s["key"] for s in steps}
    # Generation and curation planted as done, curation with no RL prompt (no trial 1 failed).
    for step, output in ((generate_config(cfg, 1, models), "episodes.jsonl"), (curate_config(cfg, 1), "curation.json")):
        Path(step.out).mkdir(parents=True)
        (Path(step.out) / output).write_text("{}\n")
        mark_done(Path(step.out), keys[step.out], step)
    (Path(curate_config(cfg, 1).out) / "rl_prompts").mkdir()
    (Path(curate_config(cfg, 1).out) / "rl_prompts" / "train.jsonl").write_text("")
    with pytest.raises(NothingToLearn, match="setting V needs rl_prompts, which curation left empty"):
        run_iteration(cfg, 1, models, keys)
