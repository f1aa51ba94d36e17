"""End to end: real gunicorn on a free loopback port, serving Gemma 3 270M.

Plain and streamed answers, more concurrent clients than slots (all answered,
batched into shared decode steps), a client that disconnects mid-stream or while
waiting for a plain answer (its generation stops: /metrics shows it cancelled,
with fewer tokens than asked), and
SIGTERM while an answer is in flight (the answer completes, then the server exits).
The SIGTERM test stops the server, so it runs last in this module.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.server.conftest import metric
from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(gemma_gguf, tmp_path_factory):
    with run_gunicorn(gemma_gguf, tmp_path_factory.mktemp("gunicorn"), LLAMA_SERVER_PARALLEL="2") as server:
        yield server


def metrics_text(base: str) -> str:
    return requests.get(f"{base}/metrics", timeout=5).text


def test_plain_and_streamed_answers(server):
    _, base = server
    body = {"query": "Name a color.", "temperature": 0, "seed": 1, "max_tokens": 6}
    plain = requests.post(f"{base}/api/respond", json=body, timeout=60)
    assert plain.status_code == 200 and plain.json()["usage"]["completion_tokens"] > 0
    with requests.post(f"{base}/api/respond", json={**body, "stream": True}, stream=True, timeout=60) as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        events = [
            json.loads(line[len("data: ") :]) for line in r.iter_lines(decode_unicode=True) if line.startswith("data: ")
        ]
    assert events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events[:-1]) == plain.json()["response"]


def test_more_clients_than_slots_are_all_answered_in_shared_steps(server):
    _, base = server
    health = requests.get(f"{base}/api/health", timeout=5).json()
    assert health["slots"]["total"] == 2 and health["parallel"]["n_parallel"] == 2
    before = metrics_text(base)
    questions = ["Name a fruit.", "Name a planet.", "Name an animal.", "Name a river."]

    def ask(q: str) -> requests.Response:
        return requests.post(f"{base}/api/respond", json={"query": q, "temperature": 0, "max_tokens": 6}, timeout=120)

    with ThreadPoolExecutor(len(questions)) as pool:
        answers = list(pool.map(ask, questions))
    assert [a.status_code for a in answers] == [200] * len(questions)
    assert all(a.json()["usage"]["completion_tokens"] > 0 for a in answers)
    after = metrics_text(base)
    steps = metric(after, "llama_server_batch_sequences_count") - metric(before, "llama_server_batch_sequences_count")
    seqs = metric(after, "llama_server_batch_sequences_sum") - metric(before, "llama_server_batch_sequences_sum")
    assert steps > 0 and seqs / steps > 1  # sequences shared llama_decode steps
    assert metric(after, "llama_server_slots_busy") == 0


def test_disconnect_mid_stream_stops_the_generation(server):
    _, base = server
    text = metrics_text(base)
    # Counters of this module's server: other tests may have cancelled generations before.
    before = metric(text, "llama_server_generated_tokens_total")
    cancelled = metric(text, "llama_server_generations_total", 'finish_reason="cancelled"')
    body = {
        "query": "Tell me a very long story about the sea.",
        "max_tokens": 250,
        "stream": True,
        "temperature": 1.0,
        "seed": 5,
    }
    with requests.post(f"{base}/api/respond", json=body, stream=True, timeout=60) as r:
        lines = r.iter_lines(decode_unicode=True)
        assert next(line for line in lines if line.startswith("data: "))  # it is generating
    # The connection is closed; the server's next writes fail and the generation is cancelled.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = metrics_text(base)
        if metric(text, "llama_server_generations_total", 'finish_reason="cancelled"') == cancelled + 1:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the generation was not cancelled")
    assert metric(text, "llama_server_generated_tokens_total") - before < 250
    assert metric(text, "llama_server_active_generations") == 0


def test_disconnect_while_waiting_for_a_plain_answer_stops_the_generation(server):
    """Nothing is written before a non-streamed answer is complete, so no failed write
    can tell the server the client left: it watches the connection instead."""
    _, base = server
    text = metrics_text(base)
    before = (
        metric(text, "llama_server_generated_tokens_total"),
        metric(text, "llama_server_generations_total", 'finish_reason="cancelled"'),
    )
    body = json.dumps(
        {"query": "Tell me a very long story about the sea.", "max_tokens": 400, "temperature": 1.0, "seed": 5}
    ).encode()
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/respond HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (f"{host}:{port}".encode(), len(body), body)
        )
        wait_until(lambda: metric(metrics_text(base), "llama_server_active_generations") == 1)
    # The client is gone; within a poll interval and a step the server stops generating.
    wait_until(
        lambda: (
            metric(metrics_text(base), "llama_server_generations_total", 'finish_reason="cancelled"') == before[1] + 1
        )
    )
    text = metrics_text(base)
    assert metric(text, "llama_server_generated_tokens_total") - before[0] < 400
    assert metric(text, "llama_server_active_generations") == 0


def test_health_answers_while_every_slot_and_queue_place_holds_a_stream(server):
    """Each open answer holds an HTTP thread, a queued one too; the default thread count
    leaves some for health and metrics (with 8, as it once was, this health check hung)."""
    _, base = server
    body = {
        "query": "Tell me a very long story about the sea.",
        "max_tokens": 250,
        "stream": True,
        "temperature": 1.0,
        "seed": 5,
    }

    def open_stream() -> requests.Response:  # returns once the answer has started
        # A queued answer's headers come only when a slot frees, after the running ones are closed
        # below: on a busy machine that is well over a minute after the request.
        return requests.post(f"{base}/api/respond", json=body, stream=True, timeout=300)

    with ThreadPoolExecutor(10) as pool:
        streams = [pool.submit(open_stream) for _ in range(10)]
        try:
            # Answered in time (a timeout would fail the test) while 8 answers wait for a slot.
            wait_until(lambda: requests.get(f"{base}/api/health", timeout=5).json()["queue_depth"] >= 6)
            assert metric(metrics_text(base), "llama_server_queue_depth") >= 1
        finally:
            for s in streams:  # a queued one opens when a slot frees up, then closes at once
                s.result().close()
    wait_until(lambda: metric(metrics_text(base), "llama_server_active_generations") == 0)


def wait_until(condition, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.05)


def test_sigterm_lets_the_answer_in_flight_finish(server):
    proc, base = server
    result: dict = {}

    def ask():
        body = {"query": "Count from one to twenty.", "max_tokens": 24, "temperature": 0}
        result["response"] = requests.post(f"{base}/api/respond", json=body, timeout=120)
        result["answered_at"] = time.monotonic()

    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 30
    while metric(metrics_text(base), "llama_server_active_generations") != 1:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    signalled_at = time.monotonic()
    asker.join(120)
    response = result["response"]
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] > 0
    assert result["answered_at"] > signalled_at  # it really was in flight when the signal came
    assert proc.wait(60) == 0
