"""OpenAI-compatible HTTP backend: vLLM / SGLang / llama.cpp servers (or any /v1/chat/completions API).

All prompts of a batch go out at once on an asyncio loop, under a concurrency limit, spread over one or
more base URLs by least-in-flight (ties: round-robin). 429, 5xx, timeouts and connection errors are
retried with exponential backoff and jitter, on the least busy URL, so a dead server's share moves to
the live ones. Scale-out is therefore: start N servers, pass N base URLs (docs/backends.md).

The chat template is the server's: vLLM and SGLang apply the model's own HF template; llama.cpp's
server applies the one in the GGUF metadata.

Fingerprint: the weights are remote, so the cache key uses sha256(what /v1/models reports + the model
id the user gave). The cache trusts the server: swap the weights behind the same names and cached
completions will be reused. Give a new model id when you change what a server serves.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import random
import threading
from typing import Sequence

from reflectevo.backends import ENGINES
from reflectevo.backends.base import Backend, Completion, Params, SamplingParams, per_prompt
from reflectevo.errors import BackendError, InputError
from reflectevo.records import Messages

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@ENGINES.register("openai",
                  "OpenAI-compatible HTTP servers (vLLM, SGLang, llama.cpp), several base URLs (extra: openai)")
def _factory(model: str, **options) -> Backend:
    return OpenAIBackend(model, **options)


def _base_urls(base_url: str | Sequence[str] | None) -> list[str]:
    if base_url is None:
        base_url = os.environ.get("OPENAI_BASE_URL", "")
    parts = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = [p.strip().rstrip("/") for p in parts if p and p.strip()]
    if not urls:
        raise InputError("engine 'openai' needs a server: --base-url http://HOST:PORT/v1 (several: comma-separated) "
                         "or OPENAI_BASE_URL")
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"base URL {url!r} must start with http:// or https://")
    return urls


class OpenAIBackend(Backend):
    def __init__(self, model: str, base_url: str | Sequence[str] | None = None, batch_size: int = 64,
                 concurrency: int = 32, max_retries: int = 5, timeout: float = 600.0, backoff: float = 0.5,
                 api_key_env: str = "OPENAI_API_KEY", extra_body: dict | None = None, **_ignored):
        try:
            import httpx
        except ImportError as exc:
            raise BackendError("engine 'openai' needs httpx: pip install 'reflectevo[openai]'") from exc
        self.urls = _base_urls(base_url)
        self.name = str(model)
        self.batch_size = batch_size
        self.max_retries = max_retries
        self.backoff = backoff
        self.extra_body = dict(extra_body or {})
        key = os.environ.get(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._in_flight = {url: 0 for url in self.urls}
        self.answered = {url: 0 for url in self.urls}  # requests each server answered (in the manifest)
        self._turn = itertools.count()
        # One event loop in a daemon thread: works from plain scripts and from inside running loops
        # (notebooks), and keeps one connection pool for the backend's life.
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="openai-backend", daemon=True).start()

        async def make_client():
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            return httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), limits=limits)

        self._client = self._run(make_client())
        self._limit = self._run(_semaphore(concurrency))
        served = self._run(self._served_models())
        self.request_model, self.served = self._pick_model(served)
        self.fingerprint = hashlib.sha256(
            json.dumps({"served": self.served, "model": self.name}, sort_keys=True).encode()).hexdigest()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- discovery -------------------------------------------------------------------------------
    async def _served_models(self) -> dict[str, str]:
        """model id -> base model (vLLM reports it as `root`), from every URL; all must answer."""
        served: dict[str, str] = {}
        for url in self.urls:
            data = await self._request("GET", url, "/models", None)
            for entry in data.get("data", []):
                served[entry["id"]] = str(entry.get("root") or entry["id"])
        if not served:
            raise BackendError(f"{self.urls[0]}/models lists no model")
        return served

    def _pick_model(self, served: dict[str, str]) -> tuple[str, list[str]]:
        """The id to send: the user's if served, else the only served model (llama.cpp names it by path)."""
        if self.name in served:
            return self.name, sorted({served[self.name]})
        if len(served) == 1:
            only = next(iter(served))
            return only, [served[only]]
        raise BackendError(f"model {self.name!r} is not served at {', '.join(self.urls)}; "
                           f"served: {', '.join(sorted(served))}")

    # -- requests --------------------------------------------------------------------------------
    def _choose_url(self, avoid: str | None) -> str:
        start = next(self._turn)
        order = self.urls[start % len(self.urls):] + self.urls[:start % len(self.urls)]
        candidates = [u for u in order if u != avoid] or order
        return min(candidates, key=lambda u: self._in_flight[u])  # min() keeps the first of ties

    async def _request(self, method: str, url: str | None, path: str, body: dict | None) -> dict:
        """One call with retries; `url=None` lets each attempt pick the least busy base URL."""
        import httpx

        failed: str | None = None
        problem = ""
        for attempt in range(self.max_retries + 1):
            target = url or self._choose_url(avoid=failed)
            self._in_flight[target] += 1
            retry_after = None
            try:
                response = await self._client.request(method, target + path, json=body)
                if response.status_code < 400:
                    data = _json_or_none(response)
                    if _well_formed(path, data):
                        self.answered[target] += 1
                        return data
                    # A garbled answer (a proxy, an overloaded server) is retried like a 5xx.
                    problem = f"malformed response: {response.text[:120].strip()!r}"
                else:
                    problem = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                    if response.status_code not in RETRY_STATUS:
                        raise BackendError(f"{target}{path}: {problem}")
                    retry_after = _seconds(response.headers.get("retry-after"))
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            finally:
                self._in_flight[target] -= 1
            failed = target
            if attempt < self.max_retries:
                if retry_after is not None:  # the server said how long: wait at least that
                    delay = min(retry_after, 60.0) * random.uniform(1.0, 1.2)
                else:  # jitter spreads the retries of many requests (no thundering herd)
                    delay = min(self.backoff * 2 ** attempt, 30.0) * random.uniform(0.5, 1.5)
                await asyncio.sleep(delay)
        where = url or failed
        raise BackendError(f"{where}{path}: no answer after {self.max_retries + 1} attempts ({problem}); "
                           "is the server running?")

    async def _chat(self, messages: Messages, params: SamplingParams, n: int, seed: int) -> list[dict]:
        body = {"model": self.request_model, "messages": list(messages), "max_tokens": params.max_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "n": n, "seed": seed,
                **self.extra_body}
        if params.stop:
            body["stop"] = list(params.stop)
        async with self._limit:
            data = await self._request("POST", None, "/chat/completions", body)
        usage = data.get("usage") or {}
        choices = data.get("choices") or []
        for choice in choices:  # usage is per request; spread it when the server gave no per-choice count
            choice.setdefault("_tokens", (usage.get("completion_tokens") or 0) // max(1, len(choices)))
        return choices

    async def _samples(self, messages: Messages, params: SamplingParams) -> list[Completion]:
        n = params.n if params.temperature > 0 else 1  # greedy: every sample is the same text
        choices = await self._chat(messages, params, n, params.seed)
        # Servers without n>1 (llama.cpp) answer one choice: ask for the rest one by one, seed + index.
        rest = await asyncio.gather(*(self._chat(messages, params, 1, params.seed + i)
                                      for i in range(len(choices), n)))
        choices = choices[:n] + [c for more in rest for c in more[:1]]
        outs = [Completion(text=(c.get("message") or {}).get("content") or "", tokens=c["_tokens"],
                           finish_reason="length" if c.get("finish_reason") == "length" else "stop")
                for c in choices]
        return outs * params.n if n == 1 else outs

    def generate(self, prompts: Sequence[Messages], params: Params) -> list[list[Completion]]:
        async def run_all():
            return await asyncio.gather(*(self._samples(m, p) for m, p in zip(prompts, per_prompt(prompts, params))))

        return self._run(run_all())

    def describe(self) -> dict:
        return {**super().describe(), "base_urls": self.urls, "served": self.served,
                "request_model": self.request_model, "answered": dict(self.answered)}

    def close(self) -> None:
        if self._loop.is_running():
            self._run(self._client.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)


async def _semaphore(limit: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(max(1, limit))  # created on the backend's loop


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:  # not JSON, or cut short
        return None


def _well_formed(path: str, data) -> bool:
    """The fields this backend reads are there, with the right types."""
    if not isinstance(data, dict):
        return False
    if path == "/models":
        return isinstance(data.get("data"), list) and all(isinstance(e, dict) and "id" in e for e in data["data"])
    choices = data.get("choices")
    return (isinstance(choices, list) and bool(choices) and isinstance(data.get("usage") or {}, dict)
            and all(isinstance(c, dict) and isinstance(c.get("message") or {}, dict) for c in choices))


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
