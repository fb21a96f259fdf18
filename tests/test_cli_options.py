"""The CLI is made from the stage configs: every field is an option, YAML keys and flags are one setting."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from reflectevo.cli import app
from reflectevo.config import EvaluateConfig, GenerateConfig
from reflectevo.options import is_cli_field, stage_command
from reflectevo.stages.curate import CurateConfig
from reflectevo.stages.evolve import EvolveConfig
from reflectevo.training.config import TrainConfig

STAGES = {"generate": GenerateConfig, "curate": CurateConfig, "train": TrainConfig, "evaluate": EvaluateConfig,
          "evolve": EvolveConfig}


@pytest.mark.parametrize("name", STAGES)
def test_every_config_field_is_an_option(name):
    command = typer.main.get_command(app).commands[name]
    spelled = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]} | \
              {param.name for param in command.params}
    for field_name, field in STAGES[name].model_fields.items():
        if is_cli_field(field):
            assert "--" + field_name.replace("_", "-") in spelled or field_name in spelled, field_name


def test_shared_options_mean_the_same_in_every_stage():
    shared = ("engine", "base_url", "batch_size", "temperature", "top_p", "max_tokens", "reflection_max_tokens",
              "seed", "limit", "data", "data_split", "few_shot", "cache", "no_cache")
    for field in shared:
        assert repr(GenerateConfig.model_fields[field]) == repr(EvaluateConfig.model_fields[field]), field


def test_help_shows_defaults_once_and_required_settings():
    wide = {"COLUMNS": "250"}
    out = CliRunner().invoke(app, ["generate", "--help"], env=wide).output
    assert "reflections sampled per instruction (paper: 2) [default: 2]" in out
    assert "[required]" in out and out.count("[default: smollm2-135m]") == 1
    out = CliRunner().invoke(app, ["train", "--help"], env=wide).output
    assert "--lora-dropout" in out and "--warmup-ratio" in out and "--lr" in out and "--lora" in out


def test_flags_override_yaml_and_lists_repeat_or_comma_separate(tmp_path):
    probe = typer.Typer()
    seen = []
    stage_command(probe, "evaluate", EvaluateConfig, lambda cfg: seen.append(cfg), section="evaluate", help="probe",
                  flags={"tasks": ["--task"]})
    stage_command(probe, "other", GenerateConfig, lambda cfg: seen.append(cfg), section="generate", help="probe")
    run = tmp_path / "run.yaml"
    run.write_text("evaluate:\n  tasks: [gsm8k]\n  out: o\n  max_tokens: 64\n  oracle_free: false\n")
    done = CliRunner().invoke(probe, ["evaluate", "-c", str(run), "--max-tokens", "32", "--task", "add,arith",
                                      "--task", "mbpp", "--no-cache"])
    assert done.exit_code == 0, done.output
    cfg = seen[-1]
    assert cfg.max_tokens == 32 and cfg.tasks == ["add", "arith", "mbpp"] and cfg.no_cache
    assert cfg.oracle_free is False  # from YAML, untouched by an absent flag
    done = CliRunner().invoke(probe, ["evaluate", "-c", str(run), "--oracle-free"])
    assert done.exit_code == 0 and seen[-1].oracle_free is True and seen[-1].tasks == ["gsm8k"]


def test_cli_errors_are_one_line():
    runner = CliRunner()
    for args, message in ((["generate", "-o", "x"], "error: missing --task (or `task:` in the config file)"),
                          (["evaluate", "--task", "add", "-o", "x", "--mode", "twostage"],
                           "error: command line: setting 'mode': Input should be 'two-stage' or 'one-stage'"),
                          (["train", "d", "-s", "VI", "-o", "x"],
                           "error: command line: setting 'setting': unknown training setting 'VI'"),
                          (["curate"], "error: missing SOURCE (or `source:` in the config file)")):
        done = runner.invoke(app, args)
        assert done.exit_code == 2
        assert done.output.strip().splitlines()[-1].startswith(message), done.output


def test_evolve_sections_are_typed(tmp_path):
    loop = tmp_path / "loop.yaml"
    loop.write_text("evolve:\n  task: add\n  generate:\n    samples: 0\n")
    done = CliRunner().invoke(app, ["evolve", "-c", str(loop), "-o", str(tmp_path / "l"), "--dry-run"])
    assert done.exit_code == 2
    assert "setting 'generate.samples': Input should be greater than or equal to 1" in done.output
    dumped = json.loads(EvolveConfig(task="add", out="o", train={"epochs": 1}).model_dump_json())
    assert dumped["train"] == {"epochs": 1}
