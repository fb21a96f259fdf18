"""The OpenAI-compatible backend against a hostile server: a real HTTP server on 127.0.0.1 that refuses
connections, answers slowly, returns 429 / 5xx, malformed JSON, JSON of the wrong shape, truncated
bodies and dropped connections.

Transient faults are retried and the call succeeds; persistent ones end in one clear line naming the
URL. End to end, `reflectevo generate` against a server that fails half way keeps its finished batches
in the generation cache, and the rerun finishes the run with exactly the episodes of an uninterrupted
one, asking the server only for what was missing.

The server's answers are a deterministic function of the request (no model), so runs can be compared
byte for byte; tests/test_backend_openai.py covers real llama.cpp servers.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

pytest.importorskip("httpx")

from reflectevo.backends import SamplingParams, load_backend  # noqa: E402
from reflectevo.errors import BackendError  # noqa: E402

MODEL = "fault-model"
PROMPTS = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(3)]


def answer_for(body: dict) -> str:
    digest = hashlib.sha256(json.dumps([body["messages"], body.get("seed")], sort_keys=True).encode()).hexdigest()
    return f"Let me think. The answer is: {int(digest[:4], 16) % 50}"


class FaultServer:
    """A real HTTP server. Each chat request takes the next fault from `plan`, then `default`."""

    def __init__(self, default: str = "ok"):
        self.plan: list[str] = []
        self.default = default
        self.chat_requests = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status: int, payload: bytes, headers: dict | None = None, length: int | None = None):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload) if length is None else length))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self.send(200, json.dumps({"data": [{"id": MODEL, "root": MODEL}]}).encode())
                else:
                    self.send(404, b'{"error": "not found"}')

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.chat_requests += 1
                    fault = server.plan.pop(0) if server.plan else server.default
                if fault == "ok":
                    choices = [{"index": 0, "message": {"role": "assistant", "content": answer_for(body)},
                                "finish_reason": "stop"}]
                    self.send(200, json.dumps({"choices": choices, "usage": {"completion_tokens": 9}}).encode())
                elif fault.isdigit():
                    self.send(int(fault), b'{"error": "injected fault"}', {"Retry-After": "0"})
                elif fault == "slow":
                    time.sleep(1.5)
                    self.send(200, b'{"choices": []}')
                elif fault == "malformed_json":
                    self.send(200, b'{"choices": [{"message": {"content": "trunc')
                elif fault == "wrong_shape":
                    self.send(200, b'{"choices": "nope", "usage": 3}')
                elif fault == "no_choices":
                    self.send(200, b'{"object": "chat.completion"}')
                elif fault == "truncated_body":
                    self.send(200, b'{"choices": [{"message"', length=4096)  # promises more, then hangs up
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif fault == "drop_connection":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    raise AssertionError(f"unknown fault {fault}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FaultServer()
    yield srv
    srv.close()


def backend(url: str, **options):
    options = {"max_retries": 3, "backoff": 0.01, "timeout": 0.5, "batch_size": 4, **options}
    return load_backend(MODEL, "openai", base_url=url, **options)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there any more: connections are refused


FAULTS = ["429", "500", "502", "503", "504", "slow", "malformed_json", "wrong_shape", "no_choices",
          "truncated_body", "drop_connection"]


@pytest.mark.parametrize("fault", FAULTS)
def test_transient_fault_is_retried(server, fault):
    gen = backend(server.url)
    try:
        server.plan = [fault, fault]  # the first request's two attempts fail, the third succeeds
        outputs = gen.generate(PROMPTS[:1], SamplingParams(max_tokens=8))
    finally:
        gen.close()
    body = {"messages": PROMPTS[0], "seed": 0}
    assert [[c.text for c in out] for out in outputs] == [[answer_for(body)]]
    assert server.chat_requests == 3


@pytest.mark.parametrize("fault", FAULTS)
def test_persistent_fault_is_one_clear_line_naming_the_url(server, fault):
    gen = backend(server.url, max_retries=2)
    server.default = fault
    started = time.monotonic()
    try:
        with pytest.raises(BackendError) as failure:
            gen.generate(PROMPTS, SamplingParams(max_tokens=8))
    finally:
        gen.close()
    message = str(failure.value)
    assert "\n" not in message and f"{server.url}/chat/completions" in message, message
    assert "3 attempts" in message, message
    assert time.monotonic() - started < 15


def test_refused_connection_is_one_clear_line():
    url = closed_port_url()
    with pytest.raises(BackendError) as failure:
        backend(url, max_retries=1)
    message = str(failure.value)
    assert "\n" not in message and f"{url}/models" in message and "is the server running?" in message


def test_client_errors_are_not_retried(server):
    gen = backend(server.url)
    server.default = "400"
    try:
        with pytest.raises(BackendError, match=r"/chat/completions: HTTP 400"):
            gen.generate(PROMPTS[:1], SamplingParams(max_tokens=8))
    finally:
        gen.close()
    assert server.chat_requests == 1


# ---------------------------------------------------------------------------------------- end to end

ARGS = ["--task", "gsm8k", "--limit", "6", "--max-tokens", "16", "--reflection-max-tokens", "16", "-k", "1",
        "--samples", "1", "--batch-size", "2", "--engine", "openai", "--model", MODEL]


def generate(url: str, out: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "REFLECTEVO_CACHE": str(cache), "REFLECTEVO_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "reflectevo.cli", "generate", *ARGS, "--base-url", url,
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)


def test_failing_server_keeps_finished_work_and_the_rerun_completes(server, tmp_path):
    import sqlite3

    clean = generate(server.url, tmp_path / "clean", tmp_path / "clean.sqlite")
    assert clean.returncode == 0, clean.stderr
    total = server.chat_requests

    # The same run on a fresh cache, against a server that starts failing for good half way.
    server.chat_requests = 0
    server.plan = ["ok"] * (total // 2)
    server.default = "503"
    failed = generate(server.url, tmp_path / "run", tmp_path / "cache.sqlite")
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1, failed.stderr
    assert lines[0].startswith("error: ") and f"{server.url}/chat/completions" in lines[0] and "503" in lines[0]
    assert not (tmp_path / "run" / "episodes.jsonl").exists(), "no partial episodes file"
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        kept = db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    assert kept >= 2, "finished batches must stay in the cache"

    # The server recovers: the rerun asks only for what is missing and ends where a clean run does.
    server.chat_requests = 0
    server.default = "ok"
    resumed = generate(server.url, tmp_path / "run", tmp_path / "cache.sqlite")
    assert resumed.returncode == 0, resumed.stderr
    assert server.chat_requests <= total - kept
    assert (tmp_path / "run" / "episodes.jsonl").read_bytes() == (tmp_path / "clean" / "episodes.jsonl").read_bytes()
