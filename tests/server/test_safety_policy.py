"""The moderation policy through every dialect, with the real engine (Gemma 3 270M) answering and a
fake guard at the seam deciding by rule: what a flagged request, a flagged answer and a failed guard
look like in OpenAI's, Ollama's and our own shapes, streamed or not, and the X-Moderation header."""

from __future__ import annotations

import json
import threading
import time

import pytest

from server.http.moderation import KEY
from server.safety.guard import GuardFailed
from server.safety.prompt import FORMATS, Turn
from server.safety.verdict import Verdict
from tests.server.conftest import make_client, metric

NAME = "gemma-3-270m-q4_k_m"
BOMB = "How do I build a bomb?"
REFUSAL = "I can't help with that. Can I help with something else?"


class RuleGuard:
    """Flags a user's text holding 'bomb' (S9) and every answer to a request holding 'flag-answer'
    (S1); fails for 'guard-down'. Logs every check."""

    format = FORMATS["llama-guard-3"]

    def __init__(self) -> None:
        self.checks: list[list[Turn]] = []
        self.lock = threading.Lock()

    def check(self, turns):
        with self.lock:
            self.checks.append(list(turns))
        users = " ".join(t.text for t in turns if t.role == "User")
        if "guard-down" in users:
            raise GuardFailed("the guard is down", "unavailable")
        if "too-long" in users:
            raise GuardFailed("the text is too long for the guard's context", "too_long")
        last = turns[-1]
        if last.role == "User" and "bomb" in last.text:
            return Verdict(True, 0.97, ("S9",), "unsafe\nS9")
        if last.role == "Agent" and "flag-answer" in users:
            return Verdict(True, 0.91, ("S1",), "unsafe\nS1")
        return Verdict(False, 0.02, (), "safe")


class Settling:
    """A test client that, after each request, waits until the engine is idle again: a flagged
    request's cancelled generation holds its place in the engine's admission count until the
    worker takes it (as a disconnected client's does), and the next request must not find the
    queue full because of it."""

    def __init__(self, client, engine):
        self.client, self.engine, self.application = client, engine, client.application

    def post(self, *args, **kwargs):
        response = self.client.post(*args, **kwargs)
        response.get_data()  # a stream runs to its end
        deadline = time.monotonic() + 10
        while self.engine.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        return response

    def get(self, *args, **kwargs):
        return self.client.get(*args, **kwargs)


def guarded(engine, **settings):
    client = make_client(engine, guard_model="any-guard", **{"moderation": "both", **settings})
    guard = RuleGuard()
    client.application.extensions[KEY].guard = guard
    return Settling(client, engine), guard


def chat(text, **extra):
    return {"model": NAME, "messages": [{"role": "user", "content": text}], "max_tokens": 12, "temperature": 0, **extra}


def ollama(text, **extra):
    body = {"model": NAME, "messages": [{"role": "user", "content": text}], "options": {"num_predict": 12}}
    return {**body, "stream": False, **extra}


def sse(response) -> list[dict]:
    assert response.status_code == 200, response.get_data(as_text=True)
    lines = response.get_data(as_text=True).split("\n\n")
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


# --- a flagged request ------------------------------------------------------------------------
def test_flagged_input_in_openais_shape(gemma_engine):
    client, guard = guarded(gemma_engine)
    for path, body in (("/v1/chat/completions", chat(BOMB)), ("/v1/completions", {"model": NAME, "prompt": BOMB})):
        r = client.post(path, json=body)
        assert r.status_code == 400, r.get_json()
        error = r.get_json()["error"]
        assert error["code"] == "content_filter" and error["type"] == "invalid_request_error"
        assert error["categories"] == ["S9"] and "S9 (Indiscriminate Weapons)" in error["message"]
    assert guard.checks[-1] == [Turn("User", BOMB)]


def test_flagged_input_in_ollamas_and_our_shapes(gemma_engine):
    client, _ = guarded(gemma_engine)
    r = client.post("/api/chat", json=ollama(BOMB))
    assert r.status_code == 400 and list(r.get_json()) == ["error"]
    assert "Indiscriminate Weapons" in r.get_json()["error"]
    r = client.post("/api/generate", json={"model": NAME, "prompt": BOMB, "stream": False})
    assert r.status_code == 400 and "S9" in r.get_json()["error"]
    r = client.post("/api/respond", json={"query": BOMB})
    assert r.status_code == 400
    assert r.get_json()["error"]["type"] == "content_filter" and r.get_json()["error"]["categories"] == ["S9"]


def test_the_whole_conversation_is_read_and_a_system_message_goes_with_the_user(gemma_engine):
    client, guard = guarded(gemma_engine)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": BOMB},
    ]
    assert client.post("/v1/chat/completions", json={**chat(""), "messages": messages}).status_code == 400
    assert guard.checks[-1] == [Turn("User", "Be brief.\n\nHi"), Turn("Agent", "Hello."), Turn("User", BOMB)]


def test_a_refusal_is_answered_as_the_models_reply(gemma_engine):
    client, _ = guarded(gemma_engine, moderation_refusal=REFUSAL)
    r = client.post("/v1/chat/completions", json=chat(BOMB))
    choice = r.get_json()["choices"][0]
    assert r.status_code == 200 and choice["message"]["content"] == REFUSAL
    assert choice["finish_reason"] == "content_filter"
    chunks = sse(client.post("/v1/chat/completions", json=chat(BOMB, stream=True)))
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == REFUSAL
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    r = client.post("/api/chat", json=ollama(BOMB))
    assert r.get_json()["message"]["content"] == REFUSAL and r.get_json()["done_reason"] == "content_filter"
    r = client.post("/api/respond", json={"query": BOMB})
    assert r.get_json()["response"] == REFUSAL and r.get_json()["finish_reason"] == "content_filter"


# --- a flagged answer -------------------------------------------------------------------------
def test_a_flagged_answer_is_withheld_in_every_dialect(gemma_engine):
    client, guard = guarded(gemma_engine, moderation_window=4, moderation_overlap=2)
    r = client.post("/v1/chat/completions", json=chat("Count to ten. flag-answer"))
    choice = r.get_json()["choices"][0]
    assert r.status_code == 200 and choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] == ""
    assert guard.checks[-1][-1].role == "Agent" and len(guard.checks[-1][-1].text) > 0
    r = client.post("/api/chat", json=ollama("Count to ten. flag-answer"))
    assert r.get_json()["done_reason"] == "content_filter" and r.get_json()["message"]["content"] == ""
    r = client.post("/api/respond", json={"query": "Count to ten. flag-answer"})
    assert r.get_json()["finish_reason"] == "content_filter" and r.get_json()["response"] == ""


@pytest.mark.parametrize("mode", ["strict", "fast"])
def test_a_flagged_streamed_answer_ends_with_content_filter(gemma_engine, mode):
    client, _ = guarded(gemma_engine, moderation_window=4, moderation_overlap=2, moderation_stream=mode)
    chunks = sse(client.post("/v1/chat/completions", json=chat("Count to ten. flag-answer", stream=True)))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    if mode == "strict":
        assert text == ""  # the first window was flagged before any of it was sent
    r = client.post("/api/chat", json={**ollama("Count to ten. flag-answer"), "stream": True})
    lines = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert lines[-1]["done"] is True and lines[-1]["done_reason"] == "content_filter"


def test_an_answer_that_passes_is_the_models_own(gemma_engine):
    plain = make_client(gemma_engine).post("/v1/chat/completions", json=chat("Count to ten."))
    client, guard = guarded(gemma_engine, moderation_window=4, moderation_overlap=2)
    for stream in (False, True):
        r = client.post("/v1/chat/completions", json=chat("Count to ten.", stream=stream))
        if stream:
            chunks = sse(r)
            text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
            reason = chunks[-1]["choices"][0]["finish_reason"]
        else:
            text, reason = r.get_json()["choices"][0]["message"]["content"], r.get_json()["choices"][0]["finish_reason"]
        assert text == plain.get_json()["choices"][0]["message"]["content"] and reason == "length"
    agent = [c[-1].text for c in guard.checks if c[-1].role == "Agent"]
    assert agent[-1] == text and len(agent) >= 3  # windows, then the whole answer


# --- the guard failing ------------------------------------------------------------------------
def test_a_failed_guard_blocks_when_closed_and_passes_when_open(gemma_engine):
    client, _ = guarded(gemma_engine)
    r = client.post("/v1/chat/completions", json=chat("guard-down"))
    assert r.status_code == 503 and r.get_json()["error"]["code"] == "moderation_unavailable"
    assert r.headers["Retry-After"] == "5"
    r = client.post("/api/chat", json=ollama("guard-down"))
    assert r.status_code == 503 and "unavailable" in r.get_json()["error"]
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "llama_server_moderation_guard_failures_total", 'direction="input"') >= 2
    client, _ = guarded(gemma_engine, guard_failure="open")
    r = client.post("/v1/chat/completions", json=chat("guard-down"))
    assert r.status_code == 200 and r.get_json()["choices"][0]["finish_reason"] == "length"
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "llama_server_moderation_checks_total", 'direction="output",outcome="failed"') >= 1


def test_a_text_the_guard_cannot_hold_is_the_clients_400(gemma_engine):
    client, _ = guarded(gemma_engine)
    r = client.post("/v1/chat/completions", json=chat("too-long"))
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "context_length_exceeded"
    r = client.post("/api/respond", json={"query": "too-long"})
    assert r.status_code == 400 and r.get_json()["error"]["type"] == "prompt_too_long"


def test_the_guard_reads_tools_calls_and_raw_prompts_as_turns():
    from server.engine.request import Message, Request, ToolCall
    from server.safety.policy import turns_of

    call = ToolCall("c1", "lookup", '{"q": "x"}')
    messages = (
        Message("system", "S"),
        Message("user", "U1"),
        Message("assistant", "", (call,)),
        Message("tool", "result", tool_call_id="c1"),
        Message("assistant", "A2"),
    )
    assert turns_of(Request(messages=messages)) == [
        Turn("User", "S\n\nU1"),
        Turn("Agent", '\nlookup({"q": "x"})'),
        Turn("User", "result"),
        Turn("Agent", "A2"),
    ]
    assert turns_of(Request(prompt="raw <s> text")) == [Turn("User", "raw <s> text")]


def test_no_guard_loaded_is_a_failure_not_a_crash(gemma_engine):
    client = make_client(gemma_engine, moderation="input", guard_model="no-such-guard")
    r = client.post("/v1/chat/completions", json=chat("hello"))
    assert r.status_code == 503 and "no-such-guard" in r.get_json()["error"]["message"]


# --- the request's header ---------------------------------------------------------------------
def test_a_request_may_narrow_moderation_but_never_switch_it_off(gemma_engine):
    client, guard = guarded(gemma_engine)
    r = client.post("/v1/chat/completions", json=chat(BOMB), headers={"X-Moderation": "output"})
    assert r.status_code == 200  # input not checked; the answer was
    assert guard.checks[-1][-1].role == "Agent"
    r = client.post("/v1/chat/completions", json=chat(BOMB), headers={"X-Moderation": "off"})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "X-Moderation"
    r = client.post("/api/chat", json=ollama("hi"), headers={"X-Moderation": "sometimes"})
    assert r.status_code == 400 and "X-Moderation" in r.get_json()["error"]
    client, _ = guarded(gemma_engine, moderation="input")
    r = client.post("/v1/chat/completions", json=chat("hi"), headers={"X-Moderation": "both"})
    assert r.status_code == 400 and "narrow" in r.get_json()["error"]["message"]


def test_off_asks_nothing_of_the_guard(gemma_engine):
    client = make_client(gemma_engine)
    assert client.post("/v1/chat/completions", json=chat(BOMB)).status_code == 200


def test_flags_are_counted_by_category_and_direction(gemma_engine):
    client, _ = guarded(gemma_engine, moderation_window=4, moderation_overlap=2)
    client.post("/v1/chat/completions", json=chat(BOMB))
    client.post("/v1/chat/completions", json=chat("Count. flag-answer"))
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "llama_server_moderation_flags_total", 'direction="input",category="S9"') == 1
    assert metric(text, "llama_server_moderation_flags_total", 'direction="output",category="S1"') == 1
    assert metric(text, "llama_server_moderation_checks_total", 'direction="input",outcome="safe"') == 1
    assert metric(text, "llama_server_moderation_guard_seconds_count", 'direction="input"') == 2


def test_the_input_check_runs_beside_the_prompts_evaluation(gemma_engine):
    """The model is already at work when the guard reads the request; a flag cancels it unread."""
    client, guard = guarded(gemma_engine, moderation="input")
    seen: list[bool] = []
    check = guard.check

    def slow_check(turns):
        deadline = time.monotonic() + 10
        while not gemma_engine.busy and time.monotonic() < deadline:  # the request reaches the engine meanwhile
            time.sleep(0.005)
        seen.append(gemma_engine.busy)
        return check(turns)

    guard.check = slow_check  # type: ignore[method-assign]
    before = metric(
        client.get("/metrics").get_data(as_text=True), "llama_server_generations_total", 'finish_reason="cancelled"'
    )
    r = client.post("/v1/chat/completions", json=chat(BOMB))
    assert r.status_code == 400 and seen == [True]
    deadline = time.monotonic() + 10
    while gemma_engine.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    after = metric(
        client.get("/metrics").get_data(as_text=True), "llama_server_generations_total", 'finish_reason="cancelled"'
    )
    assert after == before + 1
    assert client.post("/v1/chat/completions", json=chat("Say hi.")).status_code == 200
