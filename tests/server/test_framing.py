"""Where a request ends (server/http/framing.py), fed whole and one byte at a time."""

from __future__ import annotations

import pytest

from server.http.framing import HAND_OVER, MAX_HEAD_BYTES, RequestFrame

LIMIT = 1000
NEXT = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"  # a pipelined request after the first: never part of it


def ends(data: bytes, limit: int = LIMIT) -> int | None:
    """feed() over the whole buffer, and the same fed byte by byte: both must agree."""
    whole = RequestFrame(limit).feed(bytearray(data))
    frame, buf, result = RequestFrame(limit), bytearray(), None
    for byte in data:
        buf.append(byte)
        result = frame.feed(buf)
        if result is not None:
            break
    assert result == whole
    return whole


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /a HTTP/1.1\r\ncontent-length:  5 \r\n\r\nhello",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
    ],
)
def test_a_complete_request_ends_where_it_ends(request_bytes):
    assert ends(request_bytes + NEXT) == len(request_bytes)
    assert ends(request_bytes[:-1]) is None  # one byte short: wait for more


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\nHost: x\n\n",  # bare LF
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST /a HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /a HTTP/1.1\r\nContent-Length : 5\r\n\r\nhello",
        b"POST /a HTTP/1.1\r\nContent-Length: 1001\r\n\r\n",  # over the limit: the app answers 413
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n",  # a chunk over the limit
        b"GET / HTTP/1.1\r\nX: " + b"a" * MAX_HEAD_BYTES,
    ],
)
def test_what_cannot_be_framed_surely_goes_to_gunicorns_parser_at_once(request_bytes):
    assert ends(request_bytes) == HAND_OVER


def test_chunks_adding_up_past_the_limit_are_handed_over():
    chunk = b"1f4\r\n" + b"a" * 500 + b"\r\n"
    assert ends(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3) == HAND_OVER


def test_expect_100_continue_is_taken_out_of_the_head_and_flagged():
    head = b"POST /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    frame, buf = RequestFrame(LIMIT), bytearray(head)
    assert frame.feed(buf) is None and frame.expects_continue
    assert bytes(buf) == b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n"
    buf += b"{}"
    assert frame.feed(buf) == len(buf)


def test_an_http_1_0_client_is_not_sent_100_continue():
    frame = RequestFrame(LIMIT)
    assert frame.feed(bytearray(b"POST /a HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")) is None
    assert not frame.expects_continue
