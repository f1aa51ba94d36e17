"""Slow and idle clients cannot take the server down: real gunicorn, real sockets, loopback.

With gunicorn's plain gthread worker, HTTP_THREADS sockets that send half a request
head held every thread and nothing was answered, health included. The server's
worker (server/http/worker.py) reads requests in its event loop and hands a thread
only complete ones; a request that does not arrive within READ_TIMEOUT gets 408.
"""

from __future__ import annotations

import contextlib
import resource
import socket
import time

import pytest
import requests

from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow
READ_TIMEOUT = 2.0
HALF_HEADS = 256
BODY = b'{"query": "Say hi.", "max_tokens": 2, "temperature": 0}'


@pytest.fixture(scope="module")
def server(gemma_gguf, tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4 * HALF_HEADS:  # this process opens the sockets: make room for them
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4 * HALF_HEADS, hard), hard))
    with run_gunicorn(
        gemma_gguf, tmp_path_factory.mktemp("slow-clients"), LLAMA_SERVER_READ_TIMEOUT=str(READ_TIMEOUT)
    ) as server:
        yield server
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def connect(base: str, data: bytes = b"") -> socket.socket:
    sock = socket.create_connection(address(base), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def read_all(sock: socket.socket, limit_s: float = 30) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time)."""
    deadline, data = time.monotonic() + limit_s, b""
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    pytest.fail(f"the server kept the connection open past {limit_s} s: {data[:200]!r}")


def post_head(length: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /api/respond HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n" % (length, extra)
    )


def test_half_sent_heads_starve_neither_health_nor_answers(server):
    _, base = server
    with contextlib.ExitStack() as stack:
        for _ in range(HALF_HEADS):
            stack.enter_context(connect(base, b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n"))
        started = time.monotonic()
        health = requests.get(f"{base}/api/health", timeout=5)
        assert health.status_code == 200 and time.monotonic() - started < 1.0
        answer = requests.post(
            f"{base}/api/respond", data=BODY, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] > 0


def test_a_head_that_never_completes_gets_408_and_the_connection_closes(server):
    _, base = server
    with connect(base, b"GET /api/health HTTP/1.1\r\nHost: loc") as sock:
        started = time.monotonic()
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in reply
    assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 2.5


def test_a_stalled_body_gets_408_while_others_are_served(server):
    _, base = server
    with connect(base, post_head(len(BODY)) + BODY[:10]) as sock:
        started = time.monotonic()
        assert requests.get(f"{base}/api/health", timeout=5).status_code == 200
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < READ_TIMEOUT + 2.5


def test_an_idle_connection_is_closed_without_an_answer(server):
    _, base = server
    with connect(base) as sock:
        assert read_all(sock) == b""


def test_a_request_trickling_in_within_the_deadline_is_answered(server):
    _, base = server
    request = post_head(len(BODY), b"Connection: close\r\n") + BODY
    with connect(base) as sock:
        for i in range(0, len(request), 16):  # ~12 pieces, 50 ms apart: about 0.6 s in all
            sock.sendall(request[i : i + 16])
            time.sleep(0.05)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"completion_tokens"' in reply


def test_chunked_and_pipelined_requests_are_each_answered(server):
    _, base = server
    chunked = (
        b"POST /api/respond HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, BODY[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n"
        % (
            len(BODY) - 10,
            BODY[10:],
        )
    )
    last = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    with connect(base, chunked + last) as sock:  # both in one write: the second is read ahead
        reply = read_all(sock)
    assert reply.count(b"HTTP/1.1 200 ") == 2 and b'"completion_tokens"' in reply and b'"status"' in reply


def test_a_client_expecting_100_continue_gets_it_then_its_answer(server):
    _, base = server
    with connect(base, post_head(len(BODY), b"Expect: 100-continue\r\nConnection: close\r\n")) as sock:
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(BODY)
        reply = read_all(sock)
    assert reply.startswith(b"HTTP/1.1 200 ") and b"100 Continue" not in reply


def test_a_body_over_the_limit_is_refused_without_waiting_for_it(server):
    _, base = server
    with connect(base, post_head(2 << 20, b"Connection: close\r\n") + b"{") as sock:
        reply = read_all(sock, limit_s=READ_TIMEOUT + 5)
    assert reply.startswith(b"HTTP/1.1 413 ")
