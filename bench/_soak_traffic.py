"""The soak test's traffic: one kind of request per function, each saying what answers are expected.

Every kind sends one request (or one burst) to the server at `base` and returns
(status, expected) pairs: `status` is the HTTP status (0 when the connection
failed), `expected` whether that status is one the server should give for it.
A 503 `queue_full` is expected whenever PARALLEL + QUEUE_SIZE requests are already
admitted (bursts make that happen to the other clients too); any other 5xx is a
server error, which the soak must never see.
"""

from __future__ import annotations

import json
import random
import socket
from concurrent.futures import ThreadPoolExecutor

import requests

WORDS = (
    "river stone cloud lamp garden window violin harbor pepper candle meadow copper forest ladder "
    "orbit marble winter saddle kettle thunder pocket lantern comet basket mirror island engine "
    "feather canyon pillow anchor quartz tunnel velvet beacon desert maple signal falcon"
).split()
# A few long prompts asked again and again: once a slot gives one up, its state waits in the
# RAM prompt cache, and asking it again restores it.
REPEATED = [" ".join(random.Random(n).choices(WORDS, k=400)) for n in range(6)]
TIMEOUT = 300


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(WORDS, k=n))


def _post(base: str, path: str, body, **kw) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(base + path, data=data, headers={"Content-Type": "application/json"}, timeout=TIMEOUT, **kw)


def queue_full(r: requests.Response) -> bool:
    """The server's designed answer when every slot and queue place is taken (ours names it in
    `type`, OpenAI's dialect in `code`)."""
    if r.status_code != 503:
        return False
    try:
        error = r.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return "queue_full" in (error.get("type"), error.get("code"))


def judged(r: requests.Response, ok: bool) -> list[tuple[int, bool]]:
    expected = ok or queue_full(r)
    if not expected:
        print(f"unexpected {r.status_code} from {r.request.method} {r.url}: {r.text[:300]!r}", flush=True)
    return [(r.status_code, expected)]


def plain(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """A fresh long prompt: each one a new state for the prompt cache once its slot moves on."""
    body = {"query": f"Summarise: {words(rng, rng.randint(200, 900))}", "max_tokens": rng.randint(4, 16)}
    r = _post(base, "/api/respond", body)
    return judged(r, r.status_code == 200)


def repeated(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    body = {"query": rng.choice(REPEATED), "max_tokens": 6, "temperature": 0}
    r = _post(base, "/api/respond", body)
    return judged(r, r.status_code == 200)


def stream(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    body = {"query": f"Tell a story about {words(rng, 20)}", "max_tokens": rng.randint(8, 32), "stream": True}
    with _post(base, "/api/respond", body, stream=True) as r:
        if r.status_code != 200:
            return judged(r, False)
        events = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    finished = bool(events) and json.loads(events[-1][6:]).get("type") == "done"
    return judged(r, r.status_code == 200 and finished)


def v1_stream(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    body = {
        "messages": [{"role": "user", "content": f"Describe {words(rng, 30)}"}],
        "max_tokens": rng.randint(8, 24),
        "stream": True,
    }
    with _post(base, "/v1/chat/completions", body, stream=True) as r:
        if r.status_code != 200:
            return judged(r, False)
        lines = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    return judged(r, r.status_code == 200 and bool(lines) and lines[-1] == "data: [DONE]")


def cancelled_stream(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """A stream the client leaves after its first event: the server must stop that generation."""
    body = {"query": f"Write a long essay on {words(rng, 10)}", "max_tokens": 200, "stream": True}
    with _post(base, "/api/respond", body, stream=True) as r:
        if r.status_code != 200:
            return judged(r, False)
        next((line for line in r.iter_lines() if line.startswith(b"data: ")), None)
    return judged(r, r.status_code == 200)


def left_plain(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """A plain answer whose client hangs up before it is ready (the server watches the socket)."""
    body = json.dumps({"query": f"Explain {words(rng, 40)}", "max_tokens": 200}).encode()
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/respond HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body)
        )
        conn.settimeout(rng.uniform(0.05, 0.5))
        try:
            conn.recv(1)
        except (TimeoutError, OSError):
            pass
    return [(0, True)]  # no status to judge: what counts is the server's memory and later answers


def overflow(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """A prompt longer than the context: 400 prompt_too_long."""
    body = {"query": words(rng, ctx["n_ctx"] + 50), "max_tokens": 8}
    r = _post(base, "/api/respond", body)
    return judged(r, r.status_code == 400)


MALFORMED = [
    b"{not json",
    b"",
    b"[]",
    b'{"query": 5}',
    b'{"query": "hi", "max_tokens": "many"}',
    b'{"query": "hi", "max_tokens": -1}',
    b'{"query": "hi", "temperature": "hot"}',
    b'{"query": "hi", "history": [{"role": "wizard", "content": "x"}]}',
    b'{"query": "hi", "stop": [1, 2]}',
    b'{"messages": "hello"}',
]


def malformed(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """A body the server must refuse with a 4xx."""
    path = rng.choice(["/api/respond", "/v1/chat/completions"])
    if rng.random() < 0.1:  # over MAX_BODY_BYTES: 413
        body = b'{"query": "' + b"x" * (ctx["max_body_bytes"] + 10) + b'"}'
    else:
        body = rng.choice(MALFORMED)
    r = _post(base, path, body)
    return [(r.status_code, 400 <= r.status_code < 500)]


def burst(base: str, rng: random.Random, ctx) -> list[tuple[int, bool]]:
    """More requests at once than PARALLEL + QUEUE_SIZE: the rest get 503 queue_full."""
    n = ctx["parallel"] + ctx["queue_size"] + 3

    def one(i: int) -> tuple[int, bool]:
        r = _post(base, "/api/respond", {"query": f"Name a {rng.choice(WORDS)}.", "max_tokens": 4})
        return judged(r, r.status_code == 200)[0]

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


# Kind -> (function, weight): mostly real answers, with every odd case mixed in.
KINDS = {
    "plain": (plain, 6),
    "repeated": (repeated, 2),
    "stream": (stream, 3),
    "v1_stream": (v1_stream, 2),
    "cancelled_stream": (cancelled_stream, 2),
    "left_plain": (left_plain, 1),
    "overflow": (overflow, 1),
    "malformed": (malformed, 3),
    "burst": (burst, 1),
}
