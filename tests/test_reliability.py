"""One writer per run directory, atomic writes under SIGKILL, and a full disk.

- A second process on a run directory that another process holds is refused with a one-line error
  naming the directory and the holder's pid, before any model is loaded, and changes nothing there.
  The lock is an flock: it dies with its holder, so a run killed with SIGKILL never leaves a stale lock.
- `write_atomic` killed at random moments leaves the old or the new content, never a mix, and a
  reader running meanwhile only ever sees complete files.
- On a full filesystem (a 1 MiB tmpfs, mounted when this process may mount) a failed write keeps the
  previous outputs and the error says so: `write_atomic`, a whole `reflectevo curate` run, and the
  SQLite generation cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reflectevo.errors import ReflectEvoError
from reflectevo.records import episodes_to_jsonl
from reflectevo.runs import RunDir, write_atomic

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFLECTEVO_NO_PROGRESS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "reflectevo.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (but the lock) -> sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RunDir.LOCK}


def hand_episodes(count: int, offset: int = 0):
    """Episodes made by hand (the builder of tests/test_curate.py): fast, and curate turns them into rows."""
    from test_curate import BAD, GOOD, OTHER, episode

    return [episode(eid=f"gsm8k/train/{offset + i}", reflections=[(GOOD, True, "a"), (OTHER, True, "b"),
                                                                   (BAD, False, "c")])
            for i in range(count)]


# ------------------------------------------------------------------------------------- one writer

@pytest.fixture
def held_run(tmp_path):
    """A run directory with outputs, held by another process (the same RunDir every stage uses)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "episodes.jsonl").write_text(episodes_to_jsonl(hand_episodes(2)))
    (run / "results.json").write_text('{"metrics": {}}\n')
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom reflectevo.runs import RunDir\n"
                               "RunDir(sys.argv[1]).__enter__()\nprint('locked', flush=True)\ntime.sleep(600)",
         str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    yield run, holder
    holder.kill()
    holder.wait()


def test_second_writer_is_refused_and_changes_nothing(held_run, tmp_path):
    run, holder = held_run
    before = snapshot(run)
    source = tmp_path / "source"
    source.mkdir()
    (source / "episodes.jsonl").write_text(episodes_to_jsonl(hand_episodes(3)))
    commands = {
        "generate": ["generate", "--task", "gsm8k", "--limit", "1", "--out", str(run)],
        "evaluate": ["evaluate", "--task", "gsm8k", "--limit", "1", "--out", str(run)],
        "curate": ["curate", str(source), "--out", str(run)],
    }
    for name, args in commands.items():
        started = time.monotonic()
        proc = cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, f"{name}: {proc.stderr}"
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {proc.stderr}"
        assert f"run directory {run} is in use by another reflectevo process (pid {holder.pid})" in lines[0]
        assert time.monotonic() - started < 60, f"{name} took long to refuse: did it load a model first?"
        assert snapshot(run) == before, f"{name} changed the run directory it was refused"
    assert holder.poll() is None, "the holder must be unharmed"


@pytest.mark.slow  # ~15 s: the train command imports TRL before it reaches the lock
def test_train_is_refused_on_a_held_directory(held_run, tmp_path):
    from reflectevo.stages.curate import CurateConfig, curate

    run, holder = held_run
    source = tmp_path / "source"
    source.mkdir()
    (source / "episodes.jsonl").write_text(episodes_to_jsonl(hand_episodes(4)))
    curated = curate(CurateConfig(source=str(source), validation=0))
    before = snapshot(run)
    proc = cli("train", str(curated), "--setting", "I", "--out", str(run), "--max-steps", "1")
    assert proc.returncode == 2, proc.stderr
    assert f"is in use by another reflectevo process (pid {holder.pid})" in proc.stderr
    assert snapshot(run) == before


def test_lock_dies_with_a_killed_holder(held_run):
    run, holder = held_run
    with pytest.raises(ReflectEvoError, match="in use by another reflectevo process"):
        with RunDir(run):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with RunDir(run):  # no stale lock after kill -9
        assert (run / RunDir.LOCK).read_text() == str(os.getpid())


def test_one_process_two_holders_is_refused_too(tmp_path):
    # flock locks belong to open files, so even a second RunDir in the same process is refused.
    with RunDir(tmp_path / "run"):
        with pytest.raises(ReflectEvoError, match="in use"):
            with RunDir(tmp_path / "run"):
                pass


# ---------------------------------------------------------------------------------- atomic writes

WRITER = """
import sys
from reflectevo.runs import write_atomic
path, size = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
i = 0
while True:
    write_atomic(path, (b"a" if i % 2 else b"b") * size)
    i += 1
"""


def test_write_atomic_killed_at_random_moments_leaves_old_or_new(tmp_path):
    target = tmp_path / "out.bin"
    size = 4 * 2**20
    contents = {b"a" * size, b"b" * size}
    rng = random.Random(9)
    torn = reads = 0
    for trial in range(6):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(size)], stdout=subprocess.PIPE)
        assert writer.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + rng.uniform(0.05, 0.6)
        while time.monotonic() < deadline:  # a reader, meanwhile: whole files only
            if target.exists():
                data = target.read_bytes()
                reads += 1
                torn += data not in contents
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        assert target.read_bytes() in contents, f"trial {trial}: torn file after SIGKILL"
    assert reads > 0 and torn == 0, f"{torn} of {reads} reads saw a half-written file"
    # What a SIGKILL can leave is a temporary file beside the output, never a damaged output.
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".out.bin.") and name.endswith(".tmp") for name in leftovers), leftovers


# ------------------------------------------------------------------------------------- full disk

@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; skipped where this process may not mount (not root, or no tmpfs)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a small filesystem here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, timeout=20)


def fill(folder: Path) -> None:
    """Fill the filesystem of `folder` to the last byte."""
    try:
        with open(folder / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass  # full (possibly before the first byte: then there was no room even for the file)


def test_write_atomic_on_a_full_disk_keeps_the_previous_file(small_disk):
    target = small_disk / "episodes.jsonl"
    write_atomic(target, "previous\n")
    with pytest.raises(ReflectEvoError) as failure:
        write_atomic(target, "x" * (2 * 2**20))
    message = str(failure.value)
    assert message == f"cannot write {target}: no space left on device; the previous version is kept"
    assert target.read_text() == "previous\n"
    assert sorted(p.name for p in small_disk.iterdir()) == ["episodes.jsonl"], "temporary file left behind"
    with pytest.raises(ReflectEvoError, match="no space left on device; nothing was written"):
        write_atomic(small_disk / "new.jsonl", "y" * (2 * 2**20))
    assert not (small_disk / "new.jsonl").exists()


def test_curate_on_a_full_disk_keeps_previous_outputs(small_disk, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "episodes.jsonl").write_text(episodes_to_jsonl(hand_episodes(3)))
    out = small_disk / "curated"
    first = cli("curate", str(source), "--out", str(out), "--validation", "0")
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in snapshot(out)}
    # More episodes, so that new outputs would differ from the old ones; then no space at all.
    (source / "episodes.jsonl").write_text(episodes_to_jsonl(hand_episodes(40)))
    fill(small_disk)
    second = cli("curate", str(source), "--out", str(out), "--validation", "0")
    lines = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(lines) == 1, second.stderr
    assert "no space left on device" in lines[0] and "the previous version is kept" in lines[0], lines[0]
    after = {name: (out / name).read_bytes() for name in snapshot(out)}
    assert after == before, "a failed run on a full disk changed previous outputs"
    assert not [p for p in out.rglob("*.tmp")], "temporary files left behind"


def test_generation_cache_on_a_full_disk_keeps_finished_work(small_disk):
    from reflectevo.backends.base import Completion
    from reflectevo.backends.cache import GenerationCache

    cache = GenerationCache(small_disk / "cache.sqlite")
    cache.put_many([("done", Completion(text="finished work", tokens=2))], model="m")
    fill(small_disk)
    with pytest.raises(ReflectEvoError, match="cannot write"):
        cache.put_many([(f"k{i}", Completion(text="z" * 50_000, tokens=1)) for i in range(100)], model="m")
    cache.close()
    (small_disk / "filler").unlink()
    again = GenerationCache(small_disk / "cache.sqlite")
    assert again.get_many(["done"])["done"].text == "finished work"
    assert again.count() == 1, "a failed batch must not be half stored"
    again.close()


def test_run_dir_removes_half_written_temporaries(tmp_path):
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "episodes.jsonl").write_text("kept\n")
    (run / ".episodes.jsonl.k2j3h4.tmp").write_text("half")  # left by a writer killed in write_atomic
    (run / "sub" / ".train.parquet.x8y9.tmp").write_text("half")
    (run / "notes.tmp").write_text("a user's file")
    with RunDir(run):
        pass
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()) == [
        RunDir.LOCK, "episodes.jsonl", "notes.tmp"]


# ----------------------------------------------------------------------------------- crash safety

@pytest.mark.slow
def test_crash_safety_script_quick(tmp_path):
    """scripts/crash_safety.py --quick: one SIGKILL + resume per stage, outputs equal to a clean run."""
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "crash_safety.py"), "--quick", "--seed", "1",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=1500)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert set(summary["stages"]) == {"generate", "curate", "evaluate", "train"}
    assert summary["passed"] == summary["trials"] == 4


@pytest.mark.parametrize("text, match", [
    ("generate:\n", r"loop.yaml: section 'generate:' is empty"),
    ("evaluate: [1, 2]\n", r"loop.yaml: section 'evaluate:' holds a list, not a mapping of settings"),
    ("evolve:\n  task: add\n  curate:\n", r"loop.yaml: section 'curate:' is empty"),
])
def test_empty_or_non_mapping_yaml_sections_are_one_line(tmp_path, text, match):
    from reflectevo.config import load_yaml
    from reflectevo.errors import InputError

    path = tmp_path / "loop.yaml"
    path.write_text(text)
    section = next(s for s in ("evolve", "generate", "evaluate") if text.startswith(s))
    with pytest.raises(InputError, match=match):
        load_yaml(path, section)
