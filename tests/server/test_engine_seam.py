"""The engine driven through its decoder seam by a scripted decoder, for what real inference
cannot do on demand: llama_decode failing in the middle of answers, a step raising something
unexpected, an observer that raises. Everything else about the engine is tested on real models.

The fake follows the protocol (server/engine/protocol.py) as BatchDecoder does: each step
gives every running sequence one word, "w<n> ", and ends it at max_tokens; cancels take
effect at the next step; a DecodeError is raised after the batch's sequences have ended as
errors. `fail` scripts the failures: a step fails once a sequence whose prompt says FAIL
has produced `after` words.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from server.engine.decoder_types import DecodeError, DecoderStats, Ended, Timings, Usage
from server.engine.engine import Engine
from server.engine.loading import Loaded
from server.engine.request import Delta, Message, Request, SamplingParams
from server.errors import GenerationFailed
from server.http.app import create_app
from server.model.files import ModelChoice
from server.model.prompt import Llama2Format, Vocab
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS

MARK = "FAIL"


class _Seq:
    def __init__(self, prompt: list[int], params: SamplingParams, on_event) -> None:
        self.text = "".join(map(chr, prompt))
        self.params, self.on_event = params, on_event
        self.words, self.cancelled = 0, False


class FakeDecoder:
    """A scripted decoder behind the engine's Decoder protocol (see the module docstring)."""

    def __init__(self, n_slots: int = 2, n_ctx: int = 512) -> None:
        self.n_ctx, self.n_slots = n_ctx, n_slots
        self.waiting: list[_Seq] = []
        self.running: list[_Seq] = []
        self.fail: tuple[type[Exception], int] | None = None  # (what to raise, after how many words)
        self.gate = threading.Event()  # a step waits for it: lets a test line requests up first
        self.gate.set()
        self.steps, self.cancels, self.closed = 0, 0, False

    # The vocabulary: one token per character, so the fake can read a prompt back.
    n_vocab = 0x110000

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        return [1] * add_bos + [ord(c) for c in text]

    def text_of(self, tokens: list[int]) -> str:
        return "".join(map(chr, tokens))

    def piece_of(self, token: int) -> bytes:
        return chr(token).encode()

    def add(self, prompt, params, on_event) -> _Seq:
        seq = _Seq(prompt, params, on_event)
        self.waiting.append(seq)
        return seq

    def cancel(self, seq: _Seq) -> None:
        seq.cancelled = True
        self.cancels += 1

    def step(self) -> int:
        assert self.gate.wait(30), "the test never opened the gate"
        for seq in [s for s in self.waiting + self.running if s.cancelled]:
            (self.waiting if seq in self.waiting else self.running).remove(seq)
            self._end(seq, "cancelled")
        while self.waiting and len(self.running) < self.n_slots:
            self.running.append(self.waiting.pop(0))
        if not self.running:
            return 0
        self.steps += 1
        if self.fail and any(MARK in s.text and s.words >= self.fail[1] for s in self.running):
            kind = self.fail[0]
            if kind is DecodeError:  # the protocol: the batch's sequences end first
                for seq in self.running:
                    self._end(seq, "error")
                self.running.clear()
            raise kind("the scripted failure")
        for seq in list(self.running):
            seq.words += 1
            seq.on_event(Delta(f"w{seq.words} "))
            if seq.words >= seq.params.max_tokens:
                self.running.remove(seq)
                self._end(seq, "length")
        return len(self.running)

    def _end(self, seq: _Seq, reason: str) -> None:
        seq.on_event(Ended(reason, Usage(len(seq.text), seq.words, 0), Timings(0.0, 1.0, 1.0, 2.0, 0.0)))

    def stats(self) -> DecoderStats:
        return DecoderStats(self.n_slots, steps=self.steps)

    def close(self) -> None:
        self.closed = True


def _vocab(fake: FakeDecoder) -> Vocab:
    specials = {1: "<s>", 2: "</s>"}  # its only control tokens, as llama.cpp marks them (attribute CONTROL = 8)
    return Vocab(
        lambda text, special: fake.tokenize(text, False),
        1,
        2,
        "<s>",
        "</s>",
        add_bos=True,
        token_attr=lambda token: 8 if token in specials else 0,
        token_text=lambda token: specials.get(token, ""),
    )


@pytest.fixture
def fake():
    return FakeDecoder()


@pytest.fixture
def engine(fake):
    def loader(settings, model, given) -> Loaded:
        return Loaded(fake, _vocab(fake), Llama2Format(), {"model": "fake"})

    engine = Engine(Settings(**TEST_SETTINGS), ModelChoice(Path("fake.gguf"), False), loader=loader).start()
    assert engine.wait_ready(10)
    yield engine
    fake.gate.set()
    engine.close(10)
    assert fake.closed  # the engine owns what its loader made


@pytest.fixture
def client(engine):
    return create_app(Settings(**TEST_SETTINGS), engine).test_client()


def ask(text: str, max_tokens: int = 4) -> Request:
    return Request(messages=(Message("user", text),), sampling=SamplingParams(max_tokens=max_tokens))


def words(n: int) -> str:
    return "".join(f"w{i} " for i in range(1, n + 1))


def sse_events(response) -> list[dict]:
    text = response.get_data(as_text=True)
    return [json.loads(chunk[len("data: ") :]) for chunk in text.split("\n\n") if chunk.startswith("data: ")]


def wait_for(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_the_fake_answers_like_a_decoder(client):
    response = client.post("/api/respond", json={"query": "hello", "max_tokens": 3})
    assert response.status_code == 200, response.json
    assert response.json["response"] == words(3) and response.json["finish_reason"] == "length"


def test_a_decode_error_mid_answer_is_a_generic_500_and_the_next_request_is_served(client, fake, caplog):
    fake.fail = (DecodeError, 2)
    with caplog.at_level(logging.ERROR, logger="server.engine.engine"):
        ours = client.post("/api/respond", json={"query": f"{MARK} please", "max_tokens": 8})
        openai = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": MARK}]})
    assert ours.status_code == 500 and ours.json["error"]["type"] == "internal_error"
    assert openai.status_code == 500 and openai.json["error"]["type"] == "server_error"
    for response in (ours, openai):
        assert "scripted" not in response.get_data(as_text=True)  # the cause stays in the log
    # The worker logs the cause just after the answers ended.
    wait_for(lambda: caplog.text.count("llama.cpp failed to decode a batch") == 2, caplog.text)
    assert "the scripted failure" in caplog.text
    after = client.post("/api/respond", json={"query": "hello again", "max_tokens": 3})
    assert after.status_code == 200 and after.json["response"] == words(3)


def test_a_decode_error_ends_the_sequences_in_its_batch_and_no_other(client, engine, fake):
    """Two slots: A (streamed, marked) and B decode together, C waits for a slot. The
    failing step ends A and B with an error; C is served after it."""
    fake.fail, fake.gate = (DecodeError, 2), threading.Event()
    streamed: list[dict] = []  # A's events (the test client reads a stream's first event before it returns)
    reader = threading.Thread(
        target=lambda: streamed.extend(
            sse_events(client.post("/api/respond", json={"query": MARK, "max_tokens": 8, "stream": True}))
        )
    )
    reader.start()
    wait_for(lambda: fake.waiting or fake.running, "A never reached the decoder")
    b = engine.submit(ask("B", max_tokens=8))
    c = engine.submit(ask("C", max_tokens=8))
    fake.gate.set()
    got_b = []
    with pytest.raises(GenerationFailed):
        for event in b:
            got_b.append(event)
    assert got_b and all(isinstance(e, Delta) for e in got_b)  # it was answering when the step failed
    reader.join(10)
    events = streamed
    assert [e["type"] for e in events] == ["delta"] * (len(events) - 1) + ["error"]
    assert len(events) >= 2 and events[-1]["error"]["type"] == "internal_error"
    c_events = list(c)
    assert "".join(e.text for e in c_events[:-1]) == words(8) and c_events[-1].finish_reason == "length"


def test_a_step_that_raises_unexpectedly_ends_the_running_requests_once_and_the_worker_survives(engine, fake, caplog):
    fake.fail = (RuntimeError, 1)
    ended: list[str] = []
    with caplog.at_level(logging.ERROR, logger="server.engine.engine"):
        failing = engine.submit(ask(MARK, max_tokens=8), on_done=lambda done: ended.append(done.finish_reason))
        with pytest.raises(GenerationFailed):
            list(failing)
    wait_for(lambda: "the decode step failed" in caplog.text, caplog.text)
    assert "the scripted failure" in caplog.text
    assert fake.cancels == 1  # the engine stopped the sequence in the decoder too
    fake.fail = None
    after = list(engine.submit(ask("next", max_tokens=2), on_done=lambda done: ended.append(done.finish_reason)))
    assert "".join(e.text for e in after[:-1]) == words(2)
    # The decoder's own late "cancelled" for the failed sequence reached no one (the observer
    # runs just after the answer is out: wait for it).
    wait_for(lambda: len(ended) >= 2, f"observed {ended}")
    assert ended == ["error", "length"]


def test_an_observer_that_raises_is_logged_and_the_answer_still_arrives(engine, caplog):
    def broken(done) -> None:
        raise ValueError("observer bug")

    with caplog.at_level(logging.ERROR, logger="server.engine.generation"):
        events = list(engine.submit(ask("hi", max_tokens=2), on_done=broken))
    assert "".join(e.text for e in events[:-1]) == words(2) and events[-1].finish_reason == "length"
    # The answer is out before the observer runs: wait for its log line.
    wait_for(lambda: "on_done callback failed" in caplog.text, caplog.text)
    assert "observer bug" in caplog.text
    assert list(engine.submit(ask("again", max_tokens=1)))[-1].finish_reason == "length"


def test_a_decoder_that_refuses_a_request_fails_only_that_one(engine, fake, monkeypatch):
    real_add = fake.add

    def add(prompt, params, on_event):
        if MARK in "".join(map(chr, prompt)):
            raise ValueError("refused")
        return real_add(prompt, params, on_event)

    monkeypatch.setattr(fake, "add", add)
    with pytest.raises(GenerationFailed):
        list(engine.submit(ask(MARK)))
    assert list(engine.submit(ask("fine", max_tokens=1)))[-1].finish_reason == "length"
