"""The openvino engine on the real embedded model: prompt ids, samples, seeds, stops, folders, adapters.

The IR is exported once per REFLECTEVO_HOME (~12-25 s on 2 cores) and shared by every test here.
f32 is the precision that can be compared exactly with HF fp32; bf16 (the default) differs from HF bf16
by rounding (docs/backends.md), so exact agreement is checked at f32.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from dataclasses import replace

pytest.importorskip("openvino_genai", reason="the openvino extra is not installed: pip install 'reflectevo[openvino]'")

from reflectevo.backends import SamplingParams, load_backend, resolve  # noqa: E402
from reflectevo.backends.models import hf_folder  # noqa: E402
from reflectevo.backends.openvino import cpu_count  # noqa: E402
from reflectevo.errors import BackendError, InputError  # noqa: E402
from reflectevo.tasks import get_task  # noqa: E402
from training_data import EPISODES  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]
CONVERSATION = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Reflect on your answer: was it a colour?"}]
COUNT = [{"role": "user", "content": "Count: 1, 2, 3,"}]


def gsm8k_prompts(count: int):
    task = get_task("gsm8k")
    return [task.prompt(p) for p in task.load("test")[:count]]


def episode_prompts():
    """Trial-1, reflection and correction prompts (multi-turn) of real episodes."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("messages"), list):
                found.append(node["messages"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for line in EPISODES.read_text().splitlines()[:2]:
        walk(json.loads(line))
    return found


@pytest.fixture(scope="module")
def engine():
    backend = load_backend("smollm2-135m", "openvino")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def exact():
    backend = load_backend("smollm2-135m", "openvino", precision="f32")
    yield backend
    backend.close()


def test_engine_sees_the_hf_rendering(engine, default_backend):
    prompts = [QUESTION, CONVERSATION, *episode_prompts()]
    assert len(prompts) > 6 and any(len(m) >= 3 for m in prompts)  # multi-turn reflection prompts included
    ov_tokenizer = engine._pipe.get_tokenizer()
    for messages in prompts:
        text = default_backend.render(messages)
        hf_ids = default_backend.tokenizer(text, add_special_tokens=False).input_ids
        assert engine.render(messages) == text
        assert engine.prompt_ids(messages) == hf_ids
        # The engine's own tokenizer (it matches stop strings) reads the prompt the same way.
        assert list(ov_tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]) == hf_ids
    assert engine._eos == default_backend._eos  # <|im_end|> ends the turn on both
    assert engine.fingerprint == default_backend.fingerprint
    assert engine.cache_identity != default_backend.cache_identity  # never served each other's text
    info = engine.describe()
    # bf16 by default where the CPU computes it (AVX512_BF16/AMX); on an AVX2-only CPU the engine would
    # fall back to f32 silently, and the backend says so.
    import openvino as ov
    default = "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"
    assert info["precision"] == default and info["prefix_caching"] and info["threads"] == cpu_count()


def test_samples_seeds_stop_and_length(engine):
    prompts = [QUESTION, CONVERSATION, COUNT]
    sampled = SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=7)
    first = engine.generate(prompts, sampled)
    assert [len(outs) for outs in first] == [2, 2, 2]
    assert all(c.tokens > 0 and c.finish_reason in ("stop", "length") for outs in first for c in outs)
    again = engine.generate(prompts, sampled)
    assert [[c.text for c in outs] for outs in again] == [[c.text for c in outs] for outs in first]
    assert any(outs[0].text != outs[1].text for outs in first)  # different seeds, different samples
    # Sample i of a prompt is the request (prompt, seed + i).
    seeded = engine.generate([m for m in prompts for _ in range(2)],
                             [replace(sampled, n=1, seed=7 + i) for _ in prompts for i in range(2)])
    assert [outs[0].text for outs in seeded] == [c.text for outs in first for c in outs]

    greedy = engine.generate([COUNT], SamplingParams(max_tokens=12, n=2))[0]
    assert greedy[0].text == greedy[1].text and greedy[0].finish_reason == "length" and greedy[0].tokens == 12
    stop = greedy[0].text.split()[2]  # a word in the middle of the greedy text
    cut = engine.generate([COUNT], SamplingParams(max_tokens=12, stop=(stop,)))[0][0]
    assert cut.text == greedy[0].text[:greedy[0].text.find(stop)] and cut.finish_reason == "stop"
    assert 0 < cut.tokens < 12  # the engine stopped at the stop string
    short = engine.generate([COUNT], SamplingParams(max_tokens=2))[0][0]
    assert short.finish_reason == "length" and short.tokens == 2
    done = engine.generate([QUESTION], SamplingParams(max_tokens=40))[0][0]
    assert done.finish_reason == "stop" and "4" in done.text and "<|im_end|>" not in done.text


def test_seeds_and_greedy_do_not_depend_on_the_batch(exact):
    """Each request has its own random generator; at f32 the logits do not depend on the batch either."""
    prompts = gsm8k_prompts(8)
    sampled = SamplingParams(temperature=0.8, max_tokens=16, seed=5)
    together = [outs[0] for outs in exact.generate(prompts, sampled)]
    alone = [exact.generate([m], sampled)[0][0] for m in prompts[:3]]
    assert [c.text for c in alone] == [c.text for c in together[:3]]
    greedy = SamplingParams(max_tokens=24)
    batch = [outs[0].text for outs in exact.generate(prompts, greedy)]
    assert [exact.generate([m], greedy)[0][0].text for m in prompts[:3]] == batch[:3]


def test_f32_greedy_equals_hf_fp32(exact):
    hf = load_backend("smollm2-135m", "hf", dtype="float32", batch_size=8)
    try:
        prompts = [*gsm8k_prompts(6), CONVERSATION]
        params = SamplingParams(max_tokens=24)
        theirs = [outs[0].text for outs in hf.generate(prompts, params)]
    finally:
        hf.close()
    ours = [outs[0].text for outs in exact.generate(prompts, params)]
    assert sum(a == b for a, b in zip(ours, theirs)) >= len(prompts) - 1, list(zip(ours, theirs))


def test_hf_folder_loads_by_path(engine):
    folder = hf_folder(resolve("smollm2-135m"))  # the converted default model: a plain HF folder
    backend = load_backend(str(folder), "openvino")
    try:
        assert backend.name == folder.name
        assert backend.ir == engine.ir  # the IR is keyed by the exported folder: exported once
        params = SamplingParams(max_tokens=16)
        assert [o[0].text for o in backend.generate([QUESTION, COUNT], params)] == \
               [o[0].text for o in engine.generate([QUESTION, COUNT], params)]
    finally:
        backend.close()


def test_bad_input_is_one_clear_line(tmp_path):
    with pytest.raises(InputError, match="unknown model 'no-such-model'"):
        load_backend("no-such-model", "openvino")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="model 'empty'") as error:
        load_backend(str(tmp_path / "empty"), "openvino")
    assert "\n" not in str(error.value)
    # A folder with a tokenizer and config but no weights: the export fails, naming the folder.
    folder = hf_folder(resolve("smollm2-135m"))
    broken = tmp_path / "no-weights"
    shutil.copytree(folder, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(BackendError, match=r"cannot export model 'no-weights' \(.*no-weights") as error:
        load_backend(str(broken), "openvino")
    assert "\n" not in str(error.value)
    with pytest.raises(BackendError, match="precision must be bf16 or f32"):
        load_backend("smollm2-135m", "openvino", precision="int4")


def test_one_thread_runs_in_f32():
    """openvino-genai 2026.4.1 dies of SIGFPE building a bf16 pipeline with one thread: the backend must
    switch to f32 (run in a child process, so a regression fails this test instead of killing pytest)."""
    code = ("from reflectevo.backends import SamplingParams, load_backend\n"
            "b = load_backend('smollm2-135m', 'openvino', threads=1)\n"
            "out = b.generate([[{'role': 'user', 'content': 'Hi'}]], SamplingParams(max_tokens=3))\n"
            "print(b.describe()['precision'], out[0][0].tokens)")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.split() == ["f32", "3"]


# ------------------------------------------------------------------------------ a trained model
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA adapter trained by reflectevo's own trainer on real curated rows (and its merged model)."""
    from reflectevo.stages.curate import CurateConfig, curate
    from reflectevo.training import TrainConfig, train

    root = tmp_path_factory.mktemp("openvino-trained")
    curated = curate(CurateConfig(source=str(EPISODES), out=str(root / "curated"), validation=0.0, dedup="none",
                                  datasets=["sft_one_stage"]))
    # lr 1e-3 for 3 steps: outputs change on every prompt yet still depend on the prompt
    train(TrainConfig(data=str(curated), setting="I", out=str(root / "I"), learning_rate=1e-3, max_steps=3,
                      max_length=256, batch_size=2, logging_steps=1, save_steps=100, precision="fp32"))
    return root / "I"


@pytest.fixture(scope="module")
def trained_outputs(trained, exact):
    prompts = gsm8k_prompts(50)
    params = SamplingParams(max_tokens=32)
    outputs = {"base": [o[0].text for o in exact.generate(prompts, params)]}
    for label, path, engine, options in (("hf", trained / "adapter", "hf", {"dtype": "float32"}),
                                         ("adapter", trained / "adapter", "openvino", {"precision": "f32"}),
                                         ("merged", trained / "model", "openvino", {"precision": "f32"})):
        backend = load_backend(str(path), engine, **options)
        try:
            outputs[label] = [o[0].text for o in backend.generate(prompts, params)]
        finally:
            backend.close()
    return outputs


def agree(a, b) -> int:
    return sum(x == y for x, y in zip(a, b))


@pytest.mark.slow
def test_trained_model_greedy_agrees_with_hf(trained_outputs):
    hf = trained_outputs["hf"]
    assert len(set(hf)) >= 10  # the answers depend on the prompt: agreement is not trivial
    assert agree(trained_outputs["adapter"], hf) >= 45  # adapter folder: merged in memory, exported
    assert agree(trained_outputs["merged"], hf) >= 45  # the trainer's merged model folder
    assert agree(trained_outputs["adapter"], trained_outputs["merged"]) >= 45


@pytest.mark.slow
def test_adapter_changes_the_output(trained_outputs):
    assert len(trained_outputs["base"]) - agree(trained_outputs["base"], trained_outputs["adapter"]) >= 10


def test_prefix_leaders_groups_shared_prompts():
    from reflectevo.backends.openvino import prefix_leaders

    shared = tuple(range(100))
    prompts = [shared + (1,), shared + (2, 3), tuple(range(50)) + (7,) * 60, (9,) * 80, (9,) * 80]
    # The two prompts sharing 100 tokens form one group, the duplicates another; the prompt sharing
    # only 50 tokens with them is alone and needs no warming.
    assert sorted(prefix_leaders(prompts, shared=64)) == sorted([shared + (1,), (9,) * 80])
    assert prefix_leaders([shared], shared=64) == []


def test_kv_waves_keep_each_wave_inside_the_cache():
    from reflectevo.backends.openvino import kv_waves

    shared = tuple(range(320))  # 10 whole blocks of 32
    requests = [(shared + (i,), 64) for i in range(6)] + [((7,) * 100, 28), ((8,) * 5000, 10)]
    waves = kv_waves(requests, capacity=32 * 40)
    assert sorted(i for wave in waves for i in wave) == list(range(8))  # every request, once
    # The first sharing request needs 13 blocks, each further one 3 (its 10 prefix blocks are stored
    # once): 13 + 3 * 5 = 28 blocks, and the 4-block request, fit 40; the 157-block one goes alone.
    assert [sorted(w) for w in waves] == [[0, 1, 2, 3, 4, 5, 6], [7]]
    assert [sorted(w) for w in kv_waves(requests[:6], capacity=32 * 20)] == [[0, 1, 2], [3, 4, 5]]  # 13+3+3, 13+3+3
    assert kv_waves([], capacity=1000) == []


def test_kv_bytes_per_token_from_the_model_config():
    from reflectevo.backends.openvino import kv_bytes_per_token

    folder = hf_folder(resolve("smollm2-135m"))  # 30 layers, 3 KV heads of 64 dims (576 / 9 heads)
    assert kv_bytes_per_token(folder, "f32") == 2 * 30 * 3 * 64 * 4
    assert kv_bytes_per_token(folder, "bf16") == 2 * 30 * 3 * 64 * 2


def test_requests_past_the_kv_cache_run_in_waves_with_the_same_text(exact):
    """More requests than the KV cache holds are sent in waves (no engine preemption); at f32 each
    request's greedy text is the one it gets in a single wave."""
    from reflectevo.backends.openvino import kv_waves

    prompts = gsm8k_prompts(8)
    params = SamplingParams(max_tokens=48)
    one_wave = [outs[0].text for outs in exact.generate(prompts, params)]
    kept, small = exact.kv_tokens, 2 * (48 + max(len(exact.prompt_ids(m)) for m in prompts))
    assert len(kv_waves([(tuple(exact.prompt_ids(m)), 48) for m in prompts], small)) >= 4  # one or two a wave
    try:
        exact.kv_tokens = small
        waves = [outs[0].text for outs in exact.generate(prompts, params)]
    finally:
        exact.kv_tokens = kept
    assert waves == one_wave


def test_shared_prompt_samples_equal_requests_alone(exact):
    """The n samples of one prompt start together; their prefix is computed once ahead (prefix warm-up),
    which changes no text at f32: each sample equals its request sent alone."""
    prompt = episode_prompts()[1]
    sampled = SamplingParams(temperature=0.8, max_tokens=16, n=4, seed=11)
    together = [c.text for c in exact.generate([prompt], sampled)[0]]
    alone = [exact.generate([prompt], sampled.sample(i))[0][0].text for i in range(4)]
    assert together == alone and len(set(together)) > 1
