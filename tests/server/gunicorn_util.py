"""Real gunicorn on a free loopback port, for the end-to-end tests.

`run_gunicorn` starts the server as `make serve` does (same config file, settings
from LLAMA_SERVER_* variables), waits until /api/health says the model is ready,
and kills it afterwards. The log goes to a file whose contents a failed start shows.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
# Small on purpose: quick prompt evaluation, few tokens per answer.
SMALL = {"LLAMA_SERVER_N_CTX": "512", "LLAMA_SERVER_MAX_TOKENS": "8", "LLAMA_SERVER_REQUEST_TIMEOUT": "120"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_gunicorn(model: Path, log_dir: Path, command: list[str] | None = None, **settings: str):
    """Yield (process, base URL) of gunicorn serving `model`; `settings` are extra LLAMA_SERVER_* values.

    `command`: how to start it (default: gunicorn with the config file, as `make serve` does)."""
    port = free_port()
    log = open(log_dir / "server.log", "w+")
    env = {**os.environ, **SMALL, **settings, "LLAMA_SERVER_MODEL": str(model), "LLAMA_SERVER_PORT": str(port)}
    command = command or [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "server/gunicorn.conf.py",
        "server.http.app:create_app()",
    ]
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, base, Path(log.name))
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        log.close()


def _wait_healthy(proc: subprocess.Popen, base: str, log: Path, limit: float = 180) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(f"{base}/api/health", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow on a busy machine
            pass
        time.sleep(0.5)
    pytest.fail(f"gunicorn did not become healthy in {limit:.0f} s:\n{log.read_text()[-2000:]}")


API_KEY = "test-key-0123456789"
ORIGIN = "http://app.example.test:3000"  # the one web origin the keyed server lets call it (CORS)
KEYED = {"Authorization": f"Bearer {API_KEY}"}  # with the key, health has details and /metrics answers


@pytest.fixture(scope="session")
def keyed_server(gemma_gguf, tmp_path_factory):
    """(process, base URL) of one gunicorn with an API key and a CORS origin set, shared by the OpenAI,
    chat page, body and guard tests."""
    with run_gunicorn(
        gemma_gguf,
        tmp_path_factory.mktemp("keyed-gunicorn"),
        LLAMA_SERVER_API_KEY=API_KEY,
        LLAMA_SERVER_ALLOWED_ORIGINS=ORIGIN,
        LLAMA_SERVER_MAX_TOKENS_CEILING="256",
    ) as server:
        yield server
