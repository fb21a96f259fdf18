"""The backend interface: batched chat generation and continuation log-probabilities.

Backends know nothing of tasks. They take message lists (before the chat template) and sampling
parameters, and return n completions per message list. Batching across problems is the backend's job.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Sequence

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

    @property
    def model_id(self) -> str:
        return f"{self.name}@{self.fingerprint[:12]}"

    @abstractmethod
    def generate(self, prompts: Sequence[Messages], params: SamplingParams) -> list[list[Completion]]:
        """For each message list, `params.n` completions. Stop strings are not part of the text."""

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
