"""scripts/evidence.py: the statistics behind docs/evidence.md's claim, and the state it keeps in docs
so that a run resumes on a new machine."""

from __future__ import annotations

import gzip
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from reflectevo.report.metrics import Outcome

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "evidence.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("evidence_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def fresh_state(ev):
    ev.KEPT.clear()  # the run's folders, set by each test as main() sets them


def outcomes(t1: list[bool], t2: list[bool], retry: list[bool] | None = None) -> dict[str, Outcome]:
    retry = retry if retry is not None else t1
    return {f"p{i}": Outcome("t", a, b, t2_retry=c) for i, (a, b, c) in enumerate(zip(t1, t2, retry))}


def test_gain_is_paired_by_problem_and_averaged_over_seeds(ev):
    n = 40
    base = outcomes([False] * n, [False] * n)
    fixed = outcomes([False] * n, [True] * (n // 2) + [False] * (n // 2))
    gain = ev.hierarchical_gain(base, [fixed, fixed], "acc_t2_oracle", resamples=500)
    assert gain["gain"] == pytest.approx(0.5) and gain["before"] == 0 and gain["after"] == pytest.approx(0.5)
    assert gain["shown"] and gain["ci"][0] > 0.25 and gain["per_seed"] == [0.5, 0.5]
    same = ev.hierarchical_gain(base, [base, base], "acc_t2_oracle", resamples=500)
    assert same["gain"] == 0 and not same["shown"]


def test_interval_covers_training_randomness(ev):
    # One seed fixes every problem and the other none: the mean gain is 0.5, but it is not shown, since
    # resampling seeds draws the seed that gained nothing half of the time.
    n = 60
    base = outcomes([False] * n, [False] * n)
    good = outcomes([False] * n, [True] * n)
    gain = ev.hierarchical_gain(base, [good, base], "acc_t2_oracle", resamples=1000)
    assert gain["gain"] == pytest.approx(0.5) and gain["ci"][0] == 0 and not gain["shown"]
    # The same gain from two seeds that agree is shown.
    half = outcomes([False] * n, [i % 2 == 0 for i in range(n)])
    assert ev.hierarchical_gain(base, [half, half], "acc_t2_oracle", resamples=1000)["shown"]


def test_reflection_value_and_comparison_with_the_control(ev):
    n = 50
    reflected = outcomes([False] * n, [True] * 25 + [False] * 25, retry=[True] * 5 + [False] * 45)
    value = ev.reflection_value([reflected, reflected], resamples=500)
    assert value["value"] == pytest.approx(0.4) and value["shown"]
    control = outcomes([False] * n, [True] * 25 + [False] * 25)
    versus = ev.hierarchical_gain_between([control], [reflected], "acc_t2_oracle", resamples=500)
    assert versus["gain"] == 0 and not versus["shown"]
    assert ev.reflection_value([outcomes([False] * 3, [True] * 3, retry=[None] * 3)]) is None


def test_state_kept_in_docs_restores_a_lost_run_folder(ev, tmp_path):
    out, docs = tmp_path / "run", tmp_path / "docs"
    ev.KEPT.update(out=out, docs=docs)
    generate = out / "base" / "generate"
    generate.mkdir(parents=True)
    (generate / "episodes.jsonl").write_text('{"id": "a"}\n')
    ev.keep_episodes(generate)
    kept = docs / "base" / "generate" / "episodes.jsonl.gz"
    assert gzip.decompress(kept.read_bytes()) == b'{"id": "a"}\n'

    train = out / "I" / "seed-0" / "train"
    train.mkdir(parents=True)
    for name in ("final_metrics.json", "metrics.jsonl", "loss.png"):
        (train / name).write_text(name)
    (train / "adapter").mkdir()
    (train / "adapter" / "weights.bin").write_text("large")
    ev.keep_training_logs(train)
    assert sorted(p.name for p in (docs / "I" / "seed-0" / "train").iterdir()) == \
        ["final_metrics.json", "loss.png", "metrics.jsonl"]

    curate = out / "base" / "curate"
    curate.mkdir(parents=True)
    (curate / "curation.json").write_text(json.dumps({"datasets": {"sft_one_stage": {"train": 2}}}))
    assert ev.keep_curation(curate)["datasets"]["sft_one_stage"]["train"] == 2

    evaluation = out / "base" / "eval-one-stage-test"
    (docs / "base" / "eval-one-stage-test").mkdir(parents=True)
    (docs / "base" / "eval-one-stage-test" / "outcomes.jsonl").write_text(
        json.dumps({"id": "p0", "task": "t", "t1": False, "t2_oracle": True}) + "\n")

    # The machine is gone: the episodes come back, and the evaluation counts as done from docs alone.
    shutil.rmtree(out)
    ev.keep_episodes(generate)
    assert (generate / "episodes.jsonl").read_text() == '{"id": "a"}\n'
    assert ev.evaluated(evaluation) and ev.outcomes(evaluation)["p0"].t2_oracle is True
    assert ev.keep_curation(curate)["datasets"]["sft_one_stage"]["train"] == 2  # a summary still names the rows

    # A resumed run at seed 1 still reports seed 2, finished in an earlier sitting (kept in docs only).
    (out / "I" / "seed-0" / "eval-test").mkdir(parents=True)
    (out / "I" / "seed-0" / "eval-test" / "samples.jsonl").write_text("")
    (docs / "I" / "seed-2" / "eval-test").mkdir(parents=True)
    (docs / "I" / "seed-2" / "eval-test" / "outcomes.jsonl").write_text("")
    assert ev.evaluated_seeds(out, "I", "test", [0, 1, 2]) == [out / "I" / f"seed-{s}" / "eval-test" for s in (0, 2)]
    # The summary names what is still missing; a setting curation left empty is never missing.
    assert ev.not_yet_evaluated(out, ["I", "II"], [0, 1, 2], {"sft_one_stage": 2, "sft_reflect": 0}) == ["I seed 1"]


def test_the_generation_cache_is_kept_in_parts_and_restored_on_a_new_machine(ev, tmp_path):
    from reflectevo.backends.base import Completion
    from reflectevo.backends.cache import GenerationCache

    ev.KEPT.update(out=tmp_path / "run", docs=tmp_path / "docs")
    path = tmp_path / "run" / "generations.sqlite"
    cache = GenerationCache(path)
    cache.put_many([("k1", Completion("one", 3, "stop")), ("k2", Completion("twö", 5, "length"))], "m")
    cache.close()
    assert ev.keep_cache(path) == 2 and ev.keep_cache(path) == 0  # nothing new: no empty part
    cache = GenerationCache(path)
    cache.put_many([("k3", Completion("three", 1, "stop"))], "other")  # the step in flight, a batch later
    cache.close()
    assert ev.keep_cache(path) == 1
    parts = ev.cache_parts()
    assert [p.name for p in parts] == ["part-0001.jsonl.gz", "part-0002.jsonl.gz"]
    assert [r["key"] for r in ev.read_part(parts[1])] == ["k3"]

    # The machine is gone; the same command restores every completion, each under its own model.
    shutil.rmtree(tmp_path / "run")
    assert ev.restore_cache(path) == 3 and ev.restore_cache(path) == 0
    cache = GenerationCache(path)
    got = {key: (c.text, c.tokens, c.finish_reason, model) for key, c, model in cache.items()}
    cache.close()
    assert got == {"k1": ("one", 3, "stop", "m"), "k2": ("twö", 5, "length", "m"), "k3": ("three", 1, "stop", "other")}
    assert ev.keep_cache(path) == 0  # what came back from docs is not kept twice

    # A rerun under another name that changes only training restores this run's cache (--cache-from) and
    # keeps only what it generates itself, numbered among its own parts.
    ev.KEPT.update(out=tmp_path / "rerun", docs=tmp_path / "docs-rerun", cache_from=[tmp_path / "docs"])
    path = tmp_path / "rerun" / "generations.sqlite"
    assert ev.restore_cache(path) == 3 and ev.keep_cache(path) == 0
    cache = GenerationCache(path)
    cache.put_many([("k4", Completion("four", 2, "stop"))], "m")
    cache.close()
    assert ev.keep_cache(path) == 1
    assert [p.name for p in ev.cache_parts(own=True)] == ["part-0001.jsonl.gz"]
    assert [r["key"] for r in ev.read_part(ev.cache_parts(own=True)[0])] == ["k4"]


def test_second_iteration_needs_a_setting_that_beat_the_untrained_model_and_the_control(ev):
    n = 40
    base = outcomes([False] * n, [False] * n)
    quarter = outcomes([False] * n, [True] * (n // 4) + [False] * (3 * n // 4))
    half = outcomes([False] * n, [True] * (n // 2) + [False] * (n // 2))
    # II beats the untrained model more than I does, and beats the control: II is iterated.
    best, note = ev.choose_second_iteration({"I": (base, [quarter]), "II": (base, [half, half])}, [quarter])
    assert best == "II" and "+50.0 points over the untrained model" in note and "+25.0 over the control" in note
    # The same gains, but self-training matched them: nothing to iterate.
    best, note = ev.choose_second_iteration({"I": (base, [quarter]), "II": (base, [half])}, [half, half])
    assert best is None and "did not beat the control" in note and "II" in note
    # No setting beat the untrained model.
    best, note = ev.choose_second_iteration({"I": (base, [base])}, [])
    assert best is None and "did not beat the untrained model" in note
    assert ev.choose_second_iteration({}, []) == (None, None)


def test_evaluated_models_are_dropped_with_their_openvino_exports_and_nothing_else(ev, tmp_path, monkeypatch):
    """Without a second iteration no step reads a trained model after its evaluations: its merged folder
    and its cached IR go (a 1.5B setting II seed is 20 GB), its adapter and every other export stay."""
    from reflectevo.backends.openvino_export import MARKER

    monkeypatch.setenv("REFLECTEVO_HOME", str(tmp_path / "home"))
    stage = tmp_path / "run" / "II" / "seed-0" / "train" / "stage1"
    for name in ("model", "adapter"):
        (stage / name).mkdir(parents=True)
        (stage / name / "weights.safetensors").write_bytes(b"w" * 1000)
    exports = {}
    for key, source in {"mine": stage / "model", "base": tmp_path / "base-model"}.items():
        exports[key] = tmp_path / "home" / "openvino" / key
        exports[key].mkdir(parents=True)
        (exports[key] / "openvino_model.bin").write_bytes(b"i" * 500)
        (exports[key] / MARKER).write_text(json.dumps({"source": str(source)}))
    (tmp_path / "home" / "openvino" / "broken").mkdir()
    (tmp_path / "home" / "openvino" / "broken" / MARKER).write_text("{not json")

    freed = ev.drop_models({"generator": str(stage / "model"), "reflector": None})
    assert freed >= 1500 and not (stage / "model").exists() and not exports["mine"].exists()
    assert (stage / "adapter" / "weights.safetensors").is_file() and exports["base"].is_dir()
    assert (tmp_path / "home" / "openvino" / "broken").is_dir()
    assert ev.drop_models({"generator": str(stage / "model")}) == 0  # already gone: nothing to do
