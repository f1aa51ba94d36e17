"""A chunked body whose framing is broken is a 400 and the connection closes: real gunicorn, raw sockets.

A chunk-size line that is not hexadecimal (`zz\\r\\n`) passes the worker's framing as it
came (server/http/framing.py hands over what it cannot frame surely), and gunicorn's
reader raised inside the body read: the app answered 500. The body now reads through
server/http/framed_body.py: any framing error on the way is a 400, and gunicorn closes
the connection after it (what follows on it is not a request to trust).
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow
HEAD = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
BODY = b'{"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1}'
NEXT = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # pipelined: must not be answered


@pytest.fixture(scope="module")
def server(gemma_gguf, tmp_path_factory):
    with run_gunicorn(gemma_gguf, tmp_path_factory.mktemp("framing"), LLAMA_SERVER_READ_TIMEOUT="2") as server:
        yield server


def exchange(base: str, data: bytes, limit_s: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send `data`, read until the server closes the connection: (status, headers, body)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=limit_s) as sock:
        sock.sendall(data)
        received, deadline = b"", time.monotonic() + limit_s
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        else:
            pytest.fail(f"the connection stayed open after {received[:300]!r}")
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_a_chunk_size_that_is_not_hexadecimal_is_a_400_and_the_connection_closes(server):
    _, base = server
    status, headers, body = exchange(base, HEAD + b"zz\r\n" + BODY + b"\r\n0\r\n\r\n" + NEXT)
    assert status == 400, body
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert "hexadecimal" in error["message"]
    assert body.count(b"HTTP/1.1") == 0  # the pipelined request after it was not answered


def test_a_bad_chunk_after_good_ones_and_a_chunk_without_its_crlf_are_400(server):
    _, base = server
    for broken in (chunk(BODY[:10]) + b"zz\r\n" + BODY[10:], b"5\r\n" + BODY[:5] + b"XX" + chunk(BODY[5:])):
        status, headers, body = exchange(base, HEAD + broken + b"0\r\n\r\n")
        assert status == 400 and headers["connection"] == "close", body


def test_a_body_that_stops_arriving_while_the_app_reads_it_is_a_408(server):
    """A chunk over the body limit is handed to the app unframed (it answers 413 once past the
    limit); when the client stops sending first, the request's time runs out in the app's read."""
    _, base = server
    status, headers, body = exchange(base, HEAD + b"200000\r\n" + b"a" * 1000)
    assert status == 408 and headers["connection"] == "close", body
    assert json.loads(body)["error"]["code"] == "request_timeout"  # in OpenAI's shape, under /v1


def test_a_broken_body_the_app_never_reads_is_no_500_either(server):
    """The app answers without reading the body; gunicorn then finds the framing error itself,
    draining it before the next request, and answers that (400), as it always did."""
    _, base = server
    get = HEAD.replace(b"POST /v1/chat/completions", b"GET /api/health")
    status, _, body = exchange(base, get + b"zz\r\n\r\n")
    assert status == 200
    assert b" 500 " not in body and b"HTTP/1.1 400" in body, body


def test_a_well_framed_chunked_body_is_still_answered(server):
    _, base = server
    pieces = b"".join(chunk(BODY[i : i + 7]) for i in range(0, len(BODY), 7))
    status, _, body = exchange(
        base, HEAD.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1) + pieces + b"0\r\n\r\n"
    )
    assert status == 200, body


NOT_HEX = st.builds(
    lambda before, bad, after: before + bad + after,
    st.text("0123456789abcdef", max_size=3),
    st.sampled_from("xyzXYZg-+_.@"),
    st.text("0123456789abcdefxz ", max_size=4),
)


@st.composite
def broken_bodies(draw) -> bytes:
    """Some good chunks of a body, then one framing error: a size line that is not hexadecimal, or
    a chunk whose data does not end with CRLF; the rest of the body after it."""
    cuts = sorted(draw(st.lists(st.integers(1, len(BODY) - 1), max_size=3, unique=True)))
    pieces = [BODY[a:b] for a, b in zip([0, *cuts], [*cuts, len(BODY)])]
    where = draw(st.integers(0, len(pieces) - 1))
    good = b"".join(chunk(p) for p in pieces[:where])
    rest = b"".join(chunk(p) for p in pieces[where + 1 :]) + b"0\r\n\r\n"
    piece = pieces[where]
    if draw(st.booleans()):
        return good + draw(NOT_HEX).encode() + b"\r\n" + piece + b"\r\n" + rest
    ending = draw(st.binary(min_size=2, max_size=2).filter(lambda b: b != b"\r\n"))
    return good + b"%x\r\n" % len(piece) + piece + ending + rest


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(body=broken_bodies())
def test_any_framing_error_in_a_body_is_a_400_that_closes_the_connection(server, body):
    """Before: gunicorn's reader raised inside the app's body read, and the app answered 500."""
    _, base = server
    status, headers, answer = exchange(base, HEAD + body)
    assert status == 400, answer
    assert headers["connection"] == "close"
