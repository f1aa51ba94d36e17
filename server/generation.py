"""One request's handle between an HTTP thread and the engine's worker.

The HTTP side iterates a `Generation` for `Delta` events and one final
`Finished` (or gets the request's error raised), and calls `cancel()` when the
client goes away. The worker side puts events in with `_emit`/`_end`; it reads
`interrupt_reason()` once per decode step, so a cancel or a passed deadline
stops the sequence within one step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from server.decoder_types import Delta, SamplingParams
from server.errors import ClientGone, RequestTimeout

log = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "Delta", "Finished", "Generation", "api_finished"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    params: SamplingParams  # sampling, max_tokens and stop strings, as the decoder takes them
    stream: bool
    deadline: float  # time.monotonic() by which the answer must be complete


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" | "length", or "cancelled" | "timeout" | "error" (never shown to a client)
    usage: dict
    timings: dict
    cached_tokens: int = 0  # prompt tokens reused from a slot's cache (metrics only, not in the API)


class Generation:
    """One request's handle: iterate for events, cancel() to stop."""

    def __init__(self, request: GenerationRequest, on_done: Callable[[Finished], None] | None):
        self.request = request
        self.submitted = time.monotonic()
        self._on_done = on_done
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def interrupt_reason(self) -> str | None:
        if self._cancelled.is_set():
            return "cancelled"
        return "timeout" if time.monotonic() > self.request.deadline else None

    def __iter__(self) -> Iterator[Delta | Finished]:
        return self.events()

    def events(self, client_gone: Callable[[], bool] | None = None,
               every: float = 0.25) -> Iterator[Delta | Finished]:
        """The events up to and including Finished. `client_gone` is asked every `every`
        seconds, so a reader that writes nothing before the end (a non-streamed answer)
        notices a closed connection and stops the generation."""
        # The worker always ends a generation; the bound only guards against a wedged model.
        give_up = self.request.deadline + 30
        check_at = time.monotonic() + every
        while True:
            now = time.monotonic()
            if client_gone is not None and now >= check_at:
                if client_gone():
                    self.cancel()
                    raise ClientGone("the client closed the connection")
                check_at = now + every
            limit = give_up if client_gone is None else min(give_up, check_at)
            try:
                event = self._events.get(timeout=max(limit - now, 0))
            except queue.Empty:
                if time.monotonic() >= give_up:
                    self.cancel()
                    raise RequestTimeout("the answer did not complete in time") from None
                continue
            if isinstance(event, Exception):
                raise event
            yield event
            if isinstance(event, Finished):
                return

    # Worker side.
    def _emit(self, delta: Delta) -> None:
        self._events.put(delta)

    def _end(self, finished: Finished, error: Exception | None = None) -> None:
        self._events.put(error or finished)
        if self._on_done is not None:
            try:
                self._on_done(finished)
            except Exception:  # a broken observer must not take the worker down
                log.exception("on_done callback failed")


def api_finished(generation: Generation, handed: float, reason: str, usage=None, timings=None) -> Finished:
    """The end of a generation in the API's terms, from the decoder's Usage and Timings
    (None when it ended before reaching the decoder). `handed`: time.monotonic() when the
    engine gave it to the decoder; queue_ms counts the wait for a slot on both sides."""
    prompt, done = len(generation.request.prompt_tokens), usage.completion_tokens if usage else 0
    waited = (handed - generation.submitted) * 1000 + (timings.queued_ms if timings else 0.0)
    t = {"queue_ms": round(waited, 2), "prompt_ms": 0.0, "generation_ms": 0.0, "tokens_per_second": 0.0}
    if timings is not None:
        t.update(prompt_ms=round(timings.prompt_ms, 2), generation_ms=round(timings.generation_ms, 2),
                 tokens_per_second=round(timings.tokens_per_second, 2))
    return Finished(reason, {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done},
                    t, usage.cached_tokens if usage else 0)
