"""The backend interface: batched chat generation and continuation log-probabilities.

Backends know nothing of tasks. They take message lists (before the chat template) and sampling
parameters, one for all prompts or one per prompt (as vLLM's `LLM.generate` does), and return n
completions per message list. Sample i of a prompt is seeded `params.seed + i`; the Generator in front
of every backend (backends/cache.py) asks for one sample per request, each with its own seed, so a
sample's text depends on (prompt, seed) only and never on which other requests share its batch.
Batching across problems is the backend's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, replace
from typing import Sequence, Union

from reflectevo.records import Messages, Sampling


@dataclass(frozen=True)
class SamplingParams:
    """What to sample, in the spirit of vLLM's SamplingParams. temperature 0 means greedy."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int = 0

    def record(self) -> Sampling:
        """The part stored with each record (the seed and sample index are stored beside it)."""
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                        stop=list(self.stop))

    def key(self) -> dict:
        """Everything but n: the cache stores each sample under its own index."""
        data = asdict(self)
        data.pop("n")
        data["stop"] = list(self.stop)
        return data

    def sample(self, index: int) -> "SamplingParams":
        """The one-sample request for sample `index` under the plain convention (seed + index)."""
        return replace(self, n=1, seed=self.seed + index)


#: what `Backend.generate` takes: one SamplingParams for every prompt, or one per prompt
Params = Union[SamplingParams, Sequence[SamplingParams]]


def per_prompt(prompts: Sequence, params: Params) -> list[SamplingParams]:
    """One SamplingParams per prompt."""
    if isinstance(params, SamplingParams):
        return [params] * len(prompts)
    params = list(params)
    if len(params) != len(prompts):
        raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
    return params


@dataclass
class Completion:
    text: str
    tokens: int = 0
    finish_reason: str = "stop"  # stop | length
    meta: dict = field(default_factory=dict)


class Backend(ABC):
    """A model behind some engine. `fingerprint` identifies the weights, so caches never mix models."""

    #: short name shown in records, e.g. "smollm2-135m"
    name: str
    #: content hash of the weights (and adapter), stable across machines
    fingerprint: str
    #: how many prompts the engine likes to receive at once
    batch_size: int = 8
    #: whether a request's text is the same whatever other requests share its batch (measured per engine,
    #: docs/backends.md); the cache's resume guarantee holds exactly where this is True
    batch_invariant: bool = False

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.fingerprint[:12]}"

    @abstractmethod
    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        """For each message list, n completions (its params' n; sample i seeded seed + i).
        Stop strings are not part of the text."""

    def logprob(self, prompts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation as the assistant reply to its prompt."""
        raise NotImplementedError(f"{type(self).__name__} does not provide log-probabilities")

    def close(self) -> None:
        """Release the engine (processes, GPU memory, connections)."""

    @property
    def cache_identity(self) -> str:
        """What, beside the request, decides a completion: the weights and the engine computing with them.

        The same weights give different text on different engines (a Q4 GGUF in llama.cpp, bf16 in
        transformers), so the cache never serves one engine's completion to another.
        """
        return f"{type(self).__name__}:{self.fingerprint}"

    def describe(self) -> dict:
        return {"name": self.name, "fingerprint": self.fingerprint, "engine": type(self).__name__}
