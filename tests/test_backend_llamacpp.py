"""The llama.cpp engine on the real embedded model: chat template, samples, seeds, stops, log-probs."""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from reflectevo.backends import SamplingParams, load_backend  # noqa: E402
from reflectevo.errors import BackendError  # noqa: E402

QUESTION = [{"role": "user", "content": "What is 2 + 2? Answer with a number."}]
CONVERSATION = [{"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue."},
                {"role": "user", "content": "Reflect on your answer: was it a colour?"}]


@pytest.fixture(scope="module")
def llama():
    backend = load_backend("smollm2-135m", "llamacpp", instances=2)
    yield backend
    backend.close()


def test_chat_template_matches_hf(llama, default_backend):
    # One chat-template policy: llama.cpp renders exactly what transformers renders.
    for messages in (QUESTION, CONVERSATION):
        assert llama.render(messages) == default_backend.render(messages)
    assert llama.fingerprint == default_backend.fingerprint  # same weights, same cache entries


def test_samples_seeds_and_stop(llama):
    prompts = [QUESTION, CONVERSATION, [{"role": "user", "content": "Count: 1, 2, 3,"}]]
    sampled = SamplingParams(temperature=1.0, max_tokens=12, n=2, seed=7)
    first = llama.generate(prompts, sampled)
    assert [len(outs) for outs in first] == [2, 2, 2]
    assert all(c.tokens > 0 and c.finish_reason in ("stop", "length") for outs in first for c in outs)
    # Sample i uses seed + i, whichever instance runs it: a rerun reproduces every sample.
    again = llama.generate(prompts, sampled)
    assert [[c.text for c in outs] for outs in again] == [[c.text for c in outs] for outs in first]
    assert any(outs[0].text != outs[1].text for outs in first)  # different seeds, different samples

    greedy = llama.generate([prompts[2]], SamplingParams(max_tokens=12, n=2))[0]
    assert greedy[0].text == greedy[1].text
    stop = greedy[0].text.strip()[:1] or " "
    cut = llama.generate([prompts[2]], SamplingParams(max_tokens=12, stop=(stop,)))[0][0]
    assert stop not in cut.text and cut.finish_reason == "stop"
    short = llama.generate([prompts[2]], SamplingParams(max_tokens=2))[0][0]
    assert short.finish_reason == "length" and short.tokens == 2


def test_logprob_agrees_with_hf(llama, default_backend):
    replies = ["4", "The capital of France is Paris, a banana."]
    ours = llama.logprob([QUESTION, QUESTION], replies)
    assert ours[0] > ours[1]  # the right short answer is far likelier
    theirs = default_backend.logprob([QUESTION, QUESTION], replies)  # bf16 HF: drifts a little
    assert ours == pytest.approx(theirs, abs=1.5)


def test_model_without_gguf_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="needs a .gguf"):
        load_backend(str(tmp_path), "llamacpp")
