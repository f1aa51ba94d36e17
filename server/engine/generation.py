"""One request's handle between an HTTP thread and the engine's worker.

The HTTP side iterates a `Generation` for `Delta` events and one final
`Done` (or gets the request's error raised), and calls `cancel()` when the
client goes away. The engine's worker puts events in with `put`/`finish`; it reads
`interrupt_reason()` once per decode step, so a cancel or a passed deadline
stops the sequence within one step. A request that is not streamed holds its deltas
until `finish`: its reader wants only the whole answer, and waking it for each token
would have it take the interpreter's lock from the engine's thread once per token.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from server.engine.decoder_types import Ended
from server.engine.request import Delta, Done, SamplingParams
from server.errors import ClientGone, RequestTimeout

log = logging.getLogger(__name__)

__all__ = ["GenerationRequest", "Generation", "done_event"]


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    params: SamplingParams  # sampling, max_tokens and stop strings, as the decoder takes them
    stream: bool
    deadline: float  # time.monotonic() by which the answer must be complete


class Generation:
    """One request's handle: iterate for events, cancel() to stop."""

    def __init__(self, request: GenerationRequest, on_done: Callable[[Done], None] | None):
        self.request = request
        self.submitted = time.monotonic()
        self._on_done = on_done
        self._events: queue.SimpleQueue[Delta | Done | Exception] = queue.SimpleQueue()
        self._held: list[Delta] | None = None if request.stream else []  # a whole answer's deltas, until finish
        self._hold = threading.Lock()  # between the worker's put and a reader's live()
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        self._cancelled.set()

    def interrupt_reason(self) -> str | None:
        if self._cancelled.is_set():
            return "cancelled"
        return "timeout" if time.monotonic() > self.request.deadline else None

    def __iter__(self) -> Iterator[Delta | Done]:
        return self.events()

    def events(self, client_gone: Callable[[], bool] | None = None, every: float = 0.25) -> Iterator[Delta | Done]:
        """The events up to and including Done. `client_gone` is asked every `every`
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
            if isinstance(event, Done):
                return

    # The engine's worker side.
    def live(self) -> None:
        """Deliver each delta as it comes, streamed or not (a reader that checks the answer as
        it grows: server/safety/windows.py)."""
        with self._hold:
            for delta in self._held or ():
                self._events.put(delta)
            self._held = None

    def put(self, delta: Delta) -> None:
        if self._held is not None:
            with self._hold:
                if self._held is not None:
                    return self._held.append(delta)
        self._events.put(delta)

    def finish(self, finished: Done, error: Exception | None = None) -> None:
        self.live()
        self._events.put(error or finished)
        if self._on_done is not None:
            try:
                self._on_done(finished)
            except Exception:  # a broken observer must not take the worker down
                log.exception("on_done callback failed")


def done_event(generation: Generation, handed: float, reason: str, ended: Ended | None = None) -> Done:
    """The end of a generation in the API's terms, from the decoder's last event
    (None when it ended before reaching the decoder). `handed`: time.monotonic() when the
    engine gave it to the decoder; queue_ms counts the wait for a slot on both sides."""
    usage, timings = (ended.usage, ended.timings) if ended is not None else (None, None)
    prompt, done = len(generation.request.prompt_tokens), usage.completion_tokens if usage else 0
    waited = (handed - generation.submitted) * 1000 + (timings.queued_ms if timings else 0.0)
    t = {"queue_ms": round(waited, 2), "prompt_ms": 0.0, "generation_ms": 0.0, "tokens_per_second": 0.0}
    if timings is not None:
        t.update(
            prompt_ms=round(timings.prompt_ms, 2),
            generation_ms=round(timings.generation_ms, 2),
            tokens_per_second=round(timings.tokens_per_second, 2),
        )
        if timings.draft_tokens:  # speculative decoding: what was drafted for it, and kept
            t.update(draft_tokens=timings.draft_tokens, draft_accepted=timings.draft_accepted)
    return Done(
        reason,
        {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done},
        t,
        usage.cached_tokens if usage else 0,
    )
