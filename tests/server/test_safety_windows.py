"""Answers checked in windows, on generations written by hand (the one thing a real model cannot
give on demand: a flag at a chosen token). The real engine's path is in test_safety_policy.py."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.engine.generation import Generation, GenerationRequest
from server.engine.logprobs import TokenLogprob
from server.engine.request import Delta, Done, SamplingParams
from server.safety.prompt import FORMATS
from server.safety.verdict import decide, grammar, parse, score
from server.safety.windows import Watched

POOL = ThreadPoolExecutor(2)
USAGE = {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}
TIMINGS = {"queue_ms": 0.0, "prompt_ms": 0.0, "generation_ms": 0.0, "tokens_per_second": 0.0}


def answer(n: int, stream: bool = True) -> Generation:
    """A finished generation of n one-token deltas t0 t1 ..."""
    generation = Generation(GenerationRequest((1, 2, 3), SamplingParams(), stream, time.monotonic() + 60), None)
    for i in range(n):
        generation.put(Delta(f"t{i} "))
    generation.finish(Done("stop", USAGE, TIMINGS))
    return generation


class Log:
    """A fake guard's output check that logs what it read (and what the client had been sent by then)."""

    def __init__(self, flag_when: str | None = None, delay: float = 0.0):
        self.calls: list[str] = []
        self.flag_when, self.delay = flag_when, delay
        self.sent: list[str] = []
        self.sent_at_call: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, text: str) -> bool:
        with self.lock:
            self.calls.append(text)
            self.sent_at_call.append(len(self.sent))
        time.sleep(self.delay)
        return self.flag_when is not None and self.flag_when in text


def run(watched: Watched, log: Log) -> tuple[str, str]:
    text = ""
    for event in watched:
        if isinstance(event, Delta):
            log.sent.append(event.text)
            text += event.text
        else:
            return text, event.finish_reason
    raise AssertionError("no Done")


def words(a: int, b: int) -> str:
    return "".join(f"t{i} " for i in range(a, b))


def test_windows_overlap_and_the_whole_answer_is_checked_last():
    log = Log()
    text, reason = run(Watched(answer(10), log, "strict", 4, 2, POOL), log)
    assert (text, reason) == (words(0, 10), "stop")
    assert log.calls == [words(0, 4), words(2, 6), words(4, 8), words(6, 10), words(0, 10)]


def test_strict_holds_each_token_until_a_window_holding_it_has_passed():
    log = Log()
    run(Watched(answer(10), log, "strict", 4, 2, POOL), log)
    # When window [0,4) is read nothing was sent; [2,6): t0-t3 were; [4,8): t0-t5; ... the whole: all ten
    assert log.sent_at_call == [0, 4, 6, 8, 10]


def test_strict_withholds_the_flagged_window_and_everything_after_it():
    log = Log(flag_when="t5 ")
    text, reason = run(Watched(answer(12), log, "strict", 4, 2, POOL), log)
    assert reason == "content_filter"
    assert text == words(0, 4)  # window [2,6) was flagged: t4, t5 never left
    assert "t5" not in text


def test_a_flag_only_the_whole_answer_shows_withholds_the_tail():
    log = Log(flag_when="t0 t1 t2 t3 t4 t5 t6")  # no window of 4 holds it
    text, reason = run(Watched(answer(7), log, "strict", 4, 2, POOL), log)
    assert reason == "content_filter"
    assert text == words(0, 6)  # what passed windows was sent; the tail was held and withheld


def test_a_short_answer_is_checked_once():
    log = Log()
    assert run(Watched(answer(3), log, "strict", 4, 2, POOL), log) == (words(0, 3), "stop")
    assert log.calls == [words(0, 3)]
    log = Log()
    assert run(Watched(answer(4), log, "strict", 4, 2, POOL), log) == (words(0, 4), "stop")
    assert log.calls == [words(0, 4)]  # the one window was the whole answer


def test_not_streamed_nothing_is_released_unless_everything_passed():
    log = Log(flag_when="t9 ")
    text, reason = run(Watched(answer(10, stream=False), log, "fast", 4, 2, POOL), log)
    assert (text, reason) == ("", "content_filter")
    assert log.sent_at_call == [0] * len(log.calls)


def test_fast_sends_at_once_and_cuts_when_a_window_fails():
    log = Log(flag_when="t1 ")
    generation = Generation(GenerationRequest((1,), SamplingParams(), True, time.monotonic() + 60), None)
    watched = Watched(generation, log, "fast", 4, 2, POOL)
    received: list[str] = []
    done: list[Done] = []

    def read():
        for event in watched:
            (received.append(event.text) if isinstance(event, Delta) else done.append(event))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(4):
        generation.put(Delta(f"t{i} "))
    deadline = time.monotonic() + 10
    while len(received) < 4 and time.monotonic() < deadline:  # sent before any verdict came
        time.sleep(0.01)
    assert received == ["t0 ", "t1 ", "t2 ", "t3 "]
    while not generation.interrupt_reason() and time.monotonic() < deadline:  # the flag cancels the model
        generation.put(Delta("more "))
        time.sleep(0.02)
    assert generation.interrupt_reason() == "cancelled"
    generation.finish(Done("cancelled", USAGE, TIMINGS))
    reader.join(10)
    assert done[0].finish_reason == "content_filter"


def test_fast_waits_for_every_window_before_the_end():
    log = Log(flag_when="t2 ", delay=0.2)
    text, reason = run(Watched(answer(6), log, "fast", 4, 2, POOL), log)
    assert reason == "content_filter"
    assert text.startswith(words(0, 4))  # fast: flagged text may have been sent; the end says so


def record(token: int, piece: bytes, logprob: float, top):
    return TokenLogprob(token, piece, logprob, tuple(top))


def test_the_score_is_p_unsafe_over_both_answers_at_the_label_token():
    import math

    ln = math.log
    newline = record(1, b"\n\n", ln(0.9), [(1, b"\n\n", ln(0.9))])
    label = record(2, b"safe", ln(0.6), [(2, b"safe", ln(0.6)), (3, b"unsafe", ln(0.2)), (4, b"un", ln(0.1))])
    assert score([newline, label], "\n\nsafe") == pytest.approx(0.3 / 0.9)
    assert score([], "unsafe\nS1") == 1.0 and score([], "safe") == 0.0


def test_verdicts_parse_and_threshold():
    assert parse("\n\nunsafe\nS1,S10") == (True, ("S1", "S10"))
    assert parse("safe") == (False, ())
    assert decide("unsafe\nS6", 0.9, 0.5, excluded=("S6",)).flagged is False  # only excluded codes
    assert decide("unsafe\nS6,S1", 0.9, 0.5, excluded=("S6",)).categories == ("S1",)
    assert decide("unsafe\nS1", 0.4, 0.5).flagged is False
    assert decide("safe", 0.6, 0.5).flagged is True  # the score decides; no category to name


def test_the_grammar_names_only_the_guards_codes():
    assert '"S14"' in grammar(FORMATS["llama-guard-3"])
    assert '"S14"' not in grammar(FORMATS["llama-guard-3-1b"]) and '"S13"' in grammar(FORMATS["llama-guard-3-1b"])
    assert '"S12"' not in grammar(FORMATS["llama-guard-2"])
