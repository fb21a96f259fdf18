"""The OpenAI-compatible HTTP backend against real servers on 127.0.0.1.

One llama-cpp-python OpenAI server with the embedded model per session. It is started through
`python -m reflectevo.backends.llamacpp` (llama_cpp.server plus the AMX load-time fix; plain
`python -m llama_cpp.server` crashes on AMX CPUs, see backends/llamacpp.py). A second real HTTP server,
a flaky proxy, answers 429 / 500 a few times before forwarding, to exercise retries and balancing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("llama_cpp.server")
pytest.importorskip("httpx")

from reflectevo.backends import SamplingParams, load_backend  # noqa: E402
from reflectevo.backends.models import resolve  # noqa: E402
from reflectevo.errors import BackendError  # noqa: E402

QUESTIONS = [[{"role": "user", "content": f"What is {i} + {i}? Answer with a number."}] for i in range(4)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"  # a pipe would fill up and block it
    gguf = resolve("smollm2-135m").gguf
    process = subprocess.Popen(
        [sys.executable, "-m", "reflectevo.backends.llamacpp", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_threads", "1", "--n_ctx", "4096", "--verbose", "False"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                pytest.fail(f"llama.cpp server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=30)


class FlakyProxy:
    """A real HTTP server: the first `failures` requests get these statuses, the rest are forwarded."""

    def __init__(self, upstream: str, failures: list[int]):
        self.upstream, self.failures, self.seen = upstream, list(failures), []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, method):
                body = self.rfile.read(int(self.headers.get("content-length") or 0)) or None
                with threading.Lock():
                    status = proxy.failures.pop(0) if proxy.failures else 200
                proxy.seen.append(status)
                if status != 200:
                    data, code = json.dumps({"error": "try later"}).encode(), status
                else:
                    request = urllib.request.Request(proxy.upstream + self.path.removeprefix("/v1"), data=body,
                                                     method=method, headers={"content-type": "application/json"})
                    data, code = urllib.request.urlopen(request, timeout=120).read(), 200
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_batched_generation_with_samples_and_stops(llama_server):
    backend = load_backend("smollm2-135m", "openai", base_url=llama_server, concurrency=4)
    try:
        assert backend.name == "smollm2-135m" and len(backend.fingerprint) == 64
        outs = backend.generate(QUESTIONS, SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=3))
        assert [len(o) for o in outs] == [2, 2, 2, 2]
        assert all(c.tokens > 0 and c.text for o in outs for c in o)
        again = backend.generate(QUESTIONS[:1], SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=3))
        assert [c.text for c in again[0]] == [c.text for c in outs[0]]  # seeds pass through
        greedy = backend.generate(QUESTIONS[:1], SamplingParams(max_tokens=8))[0][0]
        stop = greedy.text.strip()[:1]
        cut = backend.generate(QUESTIONS[:1], SamplingParams(max_tokens=8, stop=(stop,)))[0][0]
        assert stop not in cut.text
    finally:
        backend.close()


def test_retries_and_load_balancing_over_real_servers(llama_server):
    flaky = FlakyProxy(llama_server, failures=[429, 500, 503])
    try:
        backend = load_backend("smollm2-135m", "openai", base_url=f"{flaky.url},{llama_server}",
                               backoff=0.01, max_retries=4)
        outs = backend.generate(QUESTIONS, SamplingParams(max_tokens=4))
        assert len(outs) == 4 and all(o[0].tokens > 0 for o in outs)
        assert flaky.seen[:3] == [429, 500, 503]  # /models hit the failures first and was retried
        assert 200 in flaky.seen  # and the proxy also carried a share of the work
        # The same model behind a different URL shares the fingerprint (and so the cache).
        direct = load_backend("smollm2-135m", "openai", base_url=llama_server)
        assert direct.fingerprint == backend.fingerprint
        backend.close(), direct.close()
    finally:
        flaky.close()


def test_dead_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendError, match=f"{url}/models: no answer after 2 attempts"):
        load_backend("smollm2-135m", "openai", base_url=url, max_retries=1, backoff=0.01)


def test_generate_command_end_to_end(llama_server, tmp_path, cache_path):
    from typer.testing import CliRunner

    from reflectevo.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "generate", "--task", "gsm8k", "--limit", "2", "--out", str(out), "--base-url", llama_server,
        "--max-tokens", "12", "--reflection-max-tokens", "12", "-k", "1", "--samples", "1",
        "--cache", str(cache_path)])
    assert result.exit_code == 0, result.output
    episodes = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(episodes) == 2
    assert episodes[0]["trial1"]["model"].startswith("smollm2-135m@")
    manifest = json.loads((out / "manifest.json").read_text())
    assert llama_server in json.dumps(manifest)
