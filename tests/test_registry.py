"""Extension points: one Registry shape; third-party members arrive through entry points."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reflectevo.backends import ENGINES, is_local
from reflectevo.errors import InputError
from reflectevo.registry import Registry
from reflectevo.tasks.registry import TASKS, get_task

PLUGIN = Path(__file__).parent / "data" / "plugin"


def run(code: str, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_plugin_task_is_found_through_its_entry_point():
    code = ("from typer.testing import CliRunner\nfrom reflectevo.cli import app\n"
            "from reflectevo.tasks.registry import get_task\n"
            "print(CliRunner().invoke(app, ['tasks'], env={'COLUMNS': '250'}).output)\n"
            "task = get_task('primes')\n"
            "train, val, test = (task.load(s) for s in ('train', 'validation', 'test'))\n"
            "print(len(train), len(val), len(test), len(task.read('train')))\n"
            "print(task.verify(test[0], 'The answer is: 3').correct,\n"
            "      task.verify(test[0], 'The answer is: 5').correct)\n")
    done = run(code, PLUGIN)
    assert done.returncode == 0, done.stderr
    assert "primes" in done.stdout and "the n-th prime number (a plugin task)" in done.stdout
    counts = done.stdout.strip().splitlines()[-2].split()
    train, validation, test, pool = map(int, counts)
    assert validation > 0 and train + validation == pool and test == 151  # validation carved from train
    assert done.stdout.strip().splitlines()[-1] == "True False"  # prime 2 (index 1) is 3


def test_broken_plugin_is_named_in_one_line(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('no such thing')\n")
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[reflectevo.tasks]\nbroken = broken_plugin\n")
    done = run("from reflectevo.tasks.registry import get_task\nget_task('gsm8k')", tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0
    assert "plugin 'broken' (broken_plugin, entry point group reflectevo.tasks) failed to load" in last
    assert "RuntimeError: no such thing" in last


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InputError, match=r"unknown task 'gsm9k'; known tasks: .*gsm8k"):
        get_task("gsm9k")
    with pytest.raises(InputError, match=r"unknown engine 'vlm'; known engines: hf, llamacpp, openai"):
        ENGINES.get("vlm")


def test_registry_shape():
    assert {"gsm8k", "add", "arith", "mbpp"} <= set(TASKS.names())
    assert TASKS.get("gsm8k").obj.name == "gsm8k"  # the class gets its name from the registration
    assert is_local("auto") and is_local("hf") and is_local("openvino") and not is_local("openai")
    fresh: Registry[int] = Registry("widget", "reflectevo.tasks", "reflectevo.widgets", modules=())
    fresh.add("one", "the first", 1, size=3)
    assert fresh.describe() == {"one": "the first"} and fresh.get("one").info == {"size": 3}


def test_plugin_filter_and_setting_are_found_and_used():
    code = ("from typer.testing import CliRunner\nfrom reflectevo.cli import app\n"
            "print(CliRunner().invoke(app, ['filters'], env={'COLUMNS': '250'}).output)\n"
            "print(CliRunner().invoke(app, ['settings'], env={'COLUMNS': '250'}).output)\n"
            "from reflectevo.training import TrainConfig\n"
            "cfg = TrainConfig(data='d', out='o', setting='I-dpo-on-one-stage')\n"
            "print(cfg.spec.stages[0].dataset, cfg.spec.evaluation)\n"
            "from reflectevo.stages.curate import CurateConfig, FILTERS\n"
            "print(FILTERS.get('hedging').obj(None, 'Maybe I added wrong', None))\n"
            "CurateConfig(source='s', filters=['no_trial2', 'hedging'])\n")
    done = run(code, PLUGIN)
    assert done.returncode == 0, done.stderr
    assert "hedging" in done.stdout and "I-dpo-on-one-stage" in done.stdout
    assert done.stdout.strip().splitlines()[-2:] == ["dpo_contrastive one-stage", "True"]


def test_plugin_engine_is_listed_and_generates():
    code = ("from typer.testing import CliRunner\nfrom reflectevo.cli import app\n"
            "print(CliRunner().invoke(app, ['models'], env={'COLUMNS': '250'}).output)\n"
            "from reflectevo.backends import SamplingParams, is_local, load_backend\n"
            "backend = load_backend('smollm2-135m', 'hf-fp32')\n"
            "question = [{'role': 'user', 'content': 'What is 2 + 2?'}]\n"
            "reply = backend.generate([question], SamplingParams(max_tokens=8))\n"
            "print(is_local('hf-fp32'), backend.cache_identity.split(':')[1], reply[0][0].tokens)\n")
    done = run(code, PLUGIN)
    assert done.returncode == 0, done.stderr
    assert "hf-fp32" in done.stdout and "a plugin engine" in done.stdout
    local, dtype, tokens = done.stdout.strip().splitlines()[-1].split()
    assert local == "True" and "float32" in dtype and 0 < int(tokens) <= 8
