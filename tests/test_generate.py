"""`reflectevo generate` end to end on the real default model, resume after kill -9, and bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reflectevo.prompts import correction_prompt
from reflectevo.records import read_episodes
from reflectevo.tasks import get_task

# The hf engine: batch invariant, so a resumed run equals an uninterrupted one byte for byte (openvino,
# the CPU default where installed, keeps every finished sample but is not batch invariant in bf16).
ARGS = ["--task", "gsm8k", "--limit", "3", "--max-tokens", "24", "--reflection-max-tokens", "16",
        "-k", "1", "--samples", "2", "--batch-size", "2", "--engine", "hf"]


def reflectevo(*args: str, cache: Path, check: bool = True, **popen) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFLECTEVO_CACHE": str(cache), "REFLECTEVO_NO_PROGRESS": "1"}
    proc = subprocess.run([sys.executable, "-m", "reflectevo.cli", *args], env=env, capture_output=True,
                          text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One uninterrupted real run, shared by the tests below."""
    root = tmp_path_factory.mktemp("gen")
    cache = root / "cache.sqlite"
    reflectevo("generate", *ARGS, "--out", str(root / "run"), cache=cache)
    return root / "run", cache


def test_episode_structure(first_run):
    run, _ = first_run
    episodes = read_episodes(run / "episodes.jsonl")
    task = get_task("gsm8k")
    # The train split by default: no test problem reaches generated (hence training) data.
    assert [ep.id for ep in episodes] == ["gsm8k/train/0", "gsm8k/train/1", "gsm8k/train/2"]
    assert {ep.split for ep in episodes} == {"train"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["summary"]["problems"] == 3 and manifest["split"] == "train"
    assert {"torch", "transformers"} <= set(manifest["versions"])
    assert manifest["seeds"] == {"trial1": 0, "reflection": 1, "trial2": 2}
    # The CPU's name: wall times compare only between runs on the same CPU (Linux names it in /proc/cpuinfo).
    assert "cpus" in manifest["hardware"] and "cpu" in manifest["hardware"]
    for ep in episodes:
        t1 = ep.trial1
        assert t1.model.startswith("smollm2-135m@") and t1.sampling.max_tokens == 24 and t1.seed == 0
        assert t1.messages[-1]["role"] == "user" and ep.question in t1.messages[-1]["content"]
        if t1.verdict.correct:
            assert ep.reflections == []
            continue
        # k=1 instruction x 2 samples per failure, each with its own trial 2.
        assert len(ep.reflections) == 2
        assert len({r.instruction_id for r in ep.reflections}) == 1
        assert [r.sample_index for r in ep.reflections] == [0, 1]
        trial2_answers = [(r.trial2.response, r.trial2.messages) for r in ep.reflections]
        for r in ep.reflections:
            assert r.sampling.temperature == 0.8 and r.seed == 1
            # The stored prompts are the prompts that produced the records: the failed trial 1 is in
            # them, as the assistant turn, and no trial-2 answer ever is.
            assert r.messages[-2] == {"role": "assistant", "content": t1.response}
            assert r.trial2.messages[-2] == {"role": "assistant", "content": t1.response}
            assert r.text.strip() in r.trial2.messages[-1]["content"]
            assert r.trial2.messages == correction_prompt(t1.messages, t1.response, t1.verdict.feedback, r.text,
                                                          task.answer_format)
            # A trial-2 answer shows up in a prompt only where the model merely repeated its trial 1, a
            # reflection or its own prompt (this small model often does); anything new in it never leaks.
            for answer, own_prompt in trial2_answers:
                new_text = answer.replace(t1.response, "").strip()
                copied = any(new_text in m["content"] for m in own_prompt)
                if new_text and not copied and all(new_text not in x.text for x in ep.reflections):
                    assert all(new_text not in m["content"] for m in r.messages + r.trial2.messages)
            assert r.trial2.verdict.extracted is None or r.trial2.verdict.extraction_failed is False


def test_rerun_is_cached_and_byte_identical(first_run, tmp_path):
    run, cache = first_run
    started = time.time()
    reflectevo("generate", *ARGS, "--out", str(tmp_path / "again"), cache=cache)
    assert (tmp_path / "again" / "episodes.jsonl").read_bytes() == (run / "episodes.jsonl").read_bytes()
    manifest = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert manifest["summary"]["engine_tokens"] == 0, "a warm rerun must generate nothing"
    assert time.time() - started < 120


def test_resume_after_kill_9(first_run, tmp_path):
    run, _ = first_run
    cache = tmp_path / "cache.sqlite"
    env = {**os.environ, "REFLECTEVO_CACHE": str(cache), "REFLECTEVO_NO_PROGRESS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "reflectevo.cli", "generate", *ARGS, "--out",
                             str(tmp_path / "run")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill it in the middle: once some batches are committed to the cache, but before it finishes.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                with sqlite3.connect(cache) as db:
                    if db.execute("SELECT COUNT(*) FROM completions").fetchone()[0] >= 2:
                        break
            except sqlite3.Error:
                pass
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "episodes.jsonl").exists()
    reflectevo("generate", *ARGS, "--out", str(tmp_path / "run"), cache=cache)
    # No duplicate, no lost episode: the resumed run equals the uninterrupted one, byte for byte.
    assert (tmp_path / "run" / "episodes.jsonl").read_bytes() == (run / "episodes.jsonl").read_bytes()
    with sqlite3.connect(cache) as db:
        keys = db.execute("SELECT COUNT(*), COUNT(DISTINCT key) FROM completions").fetchone()
    assert keys[0] == keys[1]


@pytest.mark.parametrize("args, message", [
    (["--task", "nosuchtask"], "unknown task 'nosuchtask'"),
    (["--task", "gsm8k", "--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--task", "logiqa", "--data", "/nonexistent/logiqa.jsonl"], "does not exist"),
    (["--task", "gsm8k", "--instructions", "bogus.id"], "unknown instruction id(s) bogus.id"),
    (["--task", "gsm8k", "--limit", "0"], "setting 'limit'"),
    (["--task", "gsm8k", "--engine", "hf", "--base-url", "http://127.0.0.1:9/v1"],
     "setting 'base_url' is for engine 'openai'"),
    (["--task", "add", "--data", "/tmp/x.jsonl"], "task 'add' generates its problems"),
])
def test_bad_input_is_one_line_and_keeps_outputs(tmp_path, args, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / "episodes.jsonl").write_text("precious\n")
    proc = reflectevo("generate", *args, "--out", str(out), cache=tmp_path / "c.sqlite", check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert (out / "episodes.jsonl").read_text() == "precious\n"


def test_malformed_and_unreadable_data_files(tmp_path, data_dir, logiqa_path):
    bad = data_dir / "malformed.jsonl"  # logiqa rows; line 3 is cut off mid-string
    good = logiqa_path.read_text().splitlines()
    assert bad.read_text().splitlines() == [good[0], good[1], '{"id": 3, "question": "broken', good[2]]
    proc = reflectevo("generate", "--task", "logiqa", "--data", str(bad), "--out", str(tmp_path / "r"),
                      cache=tmp_path / "c.sqlite", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {bad}:3: malformed JSON (")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    proc = reflectevo("generate", "--task", "logiqa", "--data", str(binary), "--out", str(tmp_path / "r"),
                      cache=tmp_path / "c.sqlite", check=False)
    assert proc.returncode == 2 and f"error: {binary}:1: not UTF-8 text" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
