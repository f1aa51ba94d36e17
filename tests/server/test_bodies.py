"""Odd JSON bodies get a 400 or 413 naming what is wrong, never a 5xx: one reader for every dialect.

Through the Flask test client over the real Gemma engine (server/http/body.py is the
reader); the chunked-body limit needs a real server that ends chunked bodies, so it
runs against real gunicorn.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest

from server.http.body import MAX_DEPTH
from tests.server.conftest import make_client
from tests.server.gunicorn_util import KEYED

CHAT = "/v1/chat/completions"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


@pytest.fixture(scope="module")
def client(gemma_engine):
    return make_client(gemma_engine, max_tokens=1, max_tokens_ceiling=4)


def post(client, path: str, text: str | bytes):
    return client.post(path, data=text, content_type="application/json")


def error_of(response, path: str) -> tuple[str, str | None]:
    """(message, field) of an error in any dialect's shape (Ollama's is a bare message)."""
    error = response.json["error"]
    if isinstance(error, str):
        return error, None
    return error["message"], error.get("param" if path.startswith("/v1/") else "field")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "path, template",
    [
        ("/api/respond", '{"query": "hi", "temperature": %s}'),
        ("/api/respond", '{"query": "hi", "top_p": %s}'),
        ("/api/respond", '{"query": "hi", "history": [{"role": "user", "content": "x", "w": [%s]}]}'),
        (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "min_p": %s}'),
        (CHAT, '{"messages": [{"role": "user", "content": "hi"}], "repeat_penalty": %s}'),
        ("/v1/completions", '{"prompt": "hi", "extra": {"deep": [1, %s]}}'),
    ],
)
def test_nan_and_infinity_are_not_json(client, path, template, literal):
    response = post(client, path, template % literal)
    assert response.status_code == 400
    message, _ = error_of(response, path)
    assert literal.lstrip("-") in message and "JSON" in message


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/api/respond", {"query": "\ud800"}, "query"),
        ("/api/respond", {"query": "hi", "system": "a\udfffb"}, "system"),
        ("/api/respond", {"query": "hi", "history": [{"role": "user", "content": "\udc00"}]}, "history[0].content"),
        ("/api/respond", {"query": "hi", "stop": ["ok", "\ud83d"]}, "stop[1]"),
        (CHAT, {"messages": [*MESSAGES[:2], {"role": "assistant", "content": "x\ud800"}]}, "messages[2].content"),
        (
            CHAT,
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]},
            "messages[0].content[0].text",
        ),
        ("/v1/completions", {"prompt": "\ud800\ud800"}, "prompt"),
        (
            "/api/chat",
            {"model": "m", "messages": [MESSAGES[1], {"role": "user", "content": "\udbff"}]},
            "messages[1].content",
        ),
        ("/api/generate", {"model": "m", "prompt": "hi", "options": {"stop": ["\ud800"]}}, "options.stop[0]"),
        ("/tokenize", {"content": "a\ud800"}, "content"),
    ],
)
def test_lone_surrogates_are_named(client, path, body, field):
    # json.dumps writes lone surrogates as \\ud800 escapes: valid JSON syntax, not valid Unicode.
    response = post(client, path, json.dumps(body))
    assert response.status_code == 400
    message, named = error_of(response, path)
    assert named in (field, None) and "Unicode" in message and field in message


def test_a_real_surrogate_pair_is_fine(client):
    response = post(client, "/api/respond", json.dumps({"query": "a \U0001f600 b"}))  # escaped as \\ud83d\\ude00
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/api/respond", CHAT, "/v1/completions", "/api/chat", "/detokenize"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 2_000, 100_000])
def test_deep_nesting_is_refused_before_parsing(client, path, depth):
    response = post(client, path, '{"query": "hi", "x": ' + "[" * depth + "]" * depth + "}")
    assert response.status_code == 400
    assert "deep" in error_of(response, path)[0]


def test_brackets_inside_strings_do_not_count(client):
    response = post(client, "/api/respond", json.dumps({"query": "[" * 5_000 + "{" * 5_000 + '\\"['}))
    assert response.status_code != 400 or "deep" not in response.json["error"]["message"]


@pytest.mark.parametrize(
    "path, body, field, words",
    [
        (CHAT, {"messages": [*MESSAGES[:2], {"role": 3, "content": "x"}]}, "messages[2].role", "must be one of"),
        (CHAT, {"messages": [MESSAGES[0], {"role": "user", "content": {"a": 1}}]}, "messages[1].content", "string"),
        (CHAT, {"messages": MESSAGES, "max_tokens": 2.0}, "max_tokens", "must be an integer"),
        (CHAT, {"messages": MESSAGES, "temperature": "hot"}, "temperature", "must be a number"),
        (CHAT, {"messages": MESSAGES, "stop": [1]}, "stop[0]", "must be a string"),
        (CHAT, {"messages": MESSAGES, "stream_options": []}, "stream_options", "must be an object"),
        (CHAT, {"messages": [{"role": "user", "content": "x", "name": 5}]}, "messages[0].name", "must be a string"),
        ("/api/respond", {"query": "hi", "max_tokens": 1.5}, "max_tokens", "must be an integer"),
        ("/api/respond", {"query": "hi", "history": [{"role": ["user"], "content": "x"}]}, "history[0].role", "one of"),
        ("/api/respond", {"query": "hi", "history": [{"role": "user", "content": None}]}, "history[0].content", ""),
        ("/api/respond", {"query": 12}, "query", "must be a string"),
        ("/api/respond", {"query": "hi", "seed": 10**30}, "seed", "at most"),
        ("/api/respond", {"query": "hi", "max_tokens": -(10**25)}, "max_tokens", "at least"),
        ("/v1/completions", {"prompt": "hi", "n": 10**31}, "n", "n=1"),
        ("/v1/completions", '{"prompt": "hi", "presence_penalty": 1e999}', "presence_penalty", "finite"),
    ],
)
def test_wrong_types_and_huge_numbers_are_named(client, path, body, field, words):
    response = post(client, path, body if isinstance(body, str) else json.dumps(body))
    assert response.status_code == 400, response.json
    message, named = error_of(response, path)
    assert named == field and words in message and field in message


def test_integers_too_long_to_read_are_400(client):
    response = post(client, "/api/respond", '{"query": "hi", "seed": ' + "9" * 5_000 + "}")
    assert response.status_code == 400 and "digits" in response.json["error"]["message"]


@pytest.mark.parametrize(
    "data",
    [b'{"query": "caf\xe9"}', '{"query": "hi"}'.encode("utf-16"), b"\xef\xbb\xbf{}", b'{"query": "hi"} trailing'],
)
def test_bodies_that_are_not_utf8_json_are_400(client, data):
    response = post(client, "/api/respond", data)
    assert response.status_code == 400 and response.json["error"]["type"] == "invalid_request"


def test_content_length_over_the_limit_is_413(gemma_engine):
    client = make_client(gemma_engine, max_body_bytes=2048)
    response = post(client, CHAT, json.dumps({"messages": [{"role": "user", "content": "x" * 4096}]}))
    assert response.status_code == 413 and response.json["error"]["code"] == "body_too_large"


def chunked_post(base: str, path: str, body: bytes, chunk: int = 65536) -> tuple[int, dict]:
    """POST `body` with Transfer-Encoding: chunked over a raw socket; (status, JSON answer).

    The body is sent from a thread while the answer is read here: a server may answer
    before it has read everything, and must not have to wait for the rest."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)

    def send() -> None:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: {KEYED['Authorization']}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            sock.sendall(head.encode())
            for i in range(0, len(body), chunk):
                piece = body[i : i + chunk]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # closed by us once the answer was in

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536) or b"!"  # "!" ends a connection closed early (failing below)
        head, _, rest = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length:"))
        while len(rest) < length:
            rest += sock.recv(65536)
    finally:
        sock.close()
        sender.join(10)
    return int(lines[0].split()[1]), json.loads(rest)


def test_chunked_body_over_the_limit_is_413_on_real_gunicorn(keyed_server):
    base = keyed_server[1]
    big = json.dumps({"messages": [{"role": "user", "content": "hi"}], "user": "x" * (2 << 20)}).encode()
    status, body = chunked_post(base, CHAT, big)
    assert status == 413 and body["error"]["code"] == "body_too_large"
    # A chunked body within the limit is read whole (not cut short, not refused).
    small = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}) + " " * 200_000
    status, body = chunked_post(base, CHAT, small.encode(), chunk=1000)
    assert status == 200 and body["usage"]["completion_tokens"] == 1
