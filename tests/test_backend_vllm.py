"""vLLM offline on a GPU: the embedded model, samples, seeds, stops, log-probs. Never runs in CI."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

QUESTION = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]


@pytest.fixture(scope="module")
def vllm_backend():
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from reflectevo.backends import load_backend

    backend = load_backend("smollm2-135m", "vllm", gpu_memory_utilization=0.3)
    yield backend
    backend.close()


def test_generate_samples_seeds_stops(vllm_backend):
    from reflectevo.backends import SamplingParams

    params = SamplingParams(temperature=1.0, max_tokens=16, n=3, seed=5)
    first = vllm_backend.generate([QUESTION, QUESTION], params)
    assert [len(o) for o in first] == [3, 3]
    assert [c.text for c in first[0]] == [c.text for c in first[1]]  # same prompt, same seeds
    assert [c.text for c in vllm_backend.generate([QUESTION], params)[0]] == [c.text for c in first[0]]
    greedy = vllm_backend.generate([QUESTION], SamplingParams(max_tokens=16, stop=("4",)))[0][0]
    assert "4" not in greedy.text


def test_logprob_prefers_the_right_answer(vllm_backend):
    right, wrong = vllm_backend.logprob([QUESTION, QUESTION], ["4", "Bananas are purple on Tuesdays."])
    assert right > wrong
