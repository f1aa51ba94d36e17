"""How the engine hands events to the HTTP threads: a whole answer in one go, a stream token by
token, and, with the decoder on a device, each step's events while the device computes the next.

The device case runs on the CPU with the decoder told it is asynchronous: the engine then holds
a step's events and hands them over from the decoder's `on_launched` hook, exactly as on a GPU
(where llama_decode returns before the step is computed). The answers must be the same, every
event must arrive, in order, and a stream must get its tokens while it runs, not at its end.
"""

from __future__ import annotations

import threading
import time

import pytest

from server.engine.batching import BatchDecoder
from server.engine.engine import Engine
from server.engine.generation import Generation, GenerationRequest
from server.engine.request import Delta, Done, Request, SamplingParams
from server.model.files import ModelChoice
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS

DONE = Done("stop", {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}, {})


def _arrivals(generation: Generation) -> tuple[list[float], threading.Thread]:
    times: list[float] = []

    def read() -> None:
        for _ in generation.events():
            times.append(time.monotonic())

    reader = threading.Thread(target=read)
    reader.start()
    return times, reader


def test_a_whole_answer_reaches_its_reader_at_the_end():
    generation = Generation(GenerationRequest((1,), SamplingParams(), False, time.monotonic() + 60), None)
    times, reader = _arrivals(generation)
    generation.put(Delta("a"))
    generation.put(Delta("b"))
    time.sleep(0.2)
    finished = time.monotonic()
    generation.finish(DONE)
    reader.join(5)
    assert len(times) == 3 and min(times) >= finished  # nothing woke the reader before the end


@pytest.mark.parametrize("how", ["stream", "live"])
def test_a_stream_or_a_live_reader_gets_each_delta_at_once(how):
    generation = Generation(GenerationRequest((1,), SamplingParams(), how == "stream", time.monotonic() + 60), None)
    if how == "live":
        generation.put(Delta("held"))
        generation.live()  # what a moderated answer's reader asks for (server/safety/windows.py)
    times, reader = _arrivals(generation)
    generation.put(Delta("a"))
    time.sleep(0.2)
    finished = time.monotonic()
    generation.finish(DONE)
    reader.join(5)
    assert len(times) == (3 if how == "live" else 2)
    assert times[0] < finished - 0.1  # the first delta came before the end


def _engine(gguf, asynchronous: bool) -> tuple[Engine, BatchDecoder, list[int]]:
    decoder = BatchDecoder.load(gguf, n_parallel=3, n_ctx_per_seq=512, n_threads=2)
    decoder.asynchronous = asynchronous
    launches = [0]
    engine = Engine(Settings(**{**TEST_SETTINGS, "parallel": 3}), ModelChoice(gguf, is_default=False), decoder)
    engine.start()
    assert engine.wait_ready(120)
    if asynchronous:
        hook = decoder.on_launched
        assert hook is not None, "the engine did not take the decoder's hook"

        def counted() -> None:
            launches[0] += 1
            hook()

        decoder.on_launched = counted
    return engine, decoder, launches


def _ask(engine: Engine, i: int, stream: bool, tokens: int) -> tuple[str, list[float], float]:
    params = SamplingParams(temperature=0, max_tokens=tokens, ignore_eos=True)
    request = Request(prompt=f"Story {i}: once upon a time", sampling=params, stream=stream)
    generation = engine.submit(request)
    text, times = "", []
    for event in generation:
        times.append(time.monotonic())
        if isinstance(event, Delta):
            text += event.text
        else:
            assert isinstance(event, Done) and event.usage["completion_tokens"] == tokens
    return text, times, times[-1]


def _answers(engine: Engine) -> list[tuple[str, list[float], float]]:
    jobs = [(0, True, 48), (1, False, 24), (2, True, 12)]
    out: list = [None] * len(jobs)

    def run(k: int) -> None:
        out[k] = _ask(engine, *jobs[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return out


def test_held_events_arrive_whole_in_order_and_while_the_stream_runs(smollm2_gguf):
    plain, decoder, _ = _engine(smollm2_gguf, asynchronous=False)
    try:
        expected = [text for text, _, _ in _answers(plain)]
    finally:
        plain.close()
        decoder.close()
    engine, decoder, launches = _engine(smollm2_gguf, asynchronous=True)
    try:
        got = _answers(engine)
    finally:
        engine.close()
        decoder.close()
    assert [text for text, _, _ in got] == expected  # same answers, nothing lost or reordered
    assert launches[0] >= 48  # the events went out beside each launch
    text, times, end = got[0]  # the long stream: its tokens came while it ran
    assert len(times) > 40 and times[len(times) // 2] < end - 0.05
    _, short_times, short_end = got[2]
    assert short_end < end - 0.05  # the short stream ended before the long one: its Done was not held
