"""An answer checked as it is generated: windows of its tokens, then the whole.

Every MODERATION_WINDOW tokens (counted as the engine's Deltas: one token each, or a few
when a character or a held-back stop string spans tokens) the last window is checked,
MODERATION_OVERLAP of them repeated from the window before, so text cut at a window's
edge is read whole once; the whole answer is checked at the end, before the final event.
Streamed answers go one of two ways (MODERATION_STREAM):

- strict: tokens are held until a window that holds them has passed (the tail, until the
  whole answer has), so a client never sees flagged text; the stream lags one window;
- fast: tokens are sent at once and each window is checked beside the stream, in a
  thread; when one is flagged the stream is cut there.

A non-streamed answer is held whole and sent only when everything passed. A flag stops
the generation (the model does no more work for it) and the answer ends with
finish_reason `content_filter`; held text is withheld.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Callable, Iterator

from server.engine.generation import Generation
from server.engine.request import Delta, Done


class Watched(Generation):
    """A Generation whose events pass the output checks; the dialects read it as any other."""

    def __init__(
        self,
        inner: Generation,
        flagged: Callable[[str], bool],
        mode: str,
        window: int,
        overlap: int,
        pool: ThreadPoolExecutor,
    ) -> None:
        super().__init__(inner.request, None)
        inner.live()  # each window is checked as the answer grows, streamed or not
        self.inner, self.flagged, self.pool = inner, flagged, pool
        self.fast = mode == "fast" and inner.request.stream
        self.window, self.step = window, window - overlap

    def cancel(self) -> None:
        self.inner.cancel()

    def interrupt_reason(self) -> str | None:
        return self.inner.interrupt_reason()

    def events(self, client_gone: Callable[[], bool] | None = None, every: float = 0.25) -> Iterator[Delta | Done]:
        texts: list[str] = []
        held: list[Delta] = []  # not yet sent (strict, or not streamed)
        sent = 0  # how many of `texts` the client has (strict)
        end = self.window  # where the next window ends
        pending: list[Future[bool]] = []  # fast mode's checks
        cut, done, whole = False, None, False  # whole: a window covered the whole answer so far
        source = self.inner.events(client_gone, every)
        for event in source:
            if not isinstance(event, Delta):
                done = event
                break
            texts.append(event.text)
            if self.fast:
                yield event
            else:
                held.append(event)
            if len(texts) >= end:
                text = "".join(texts[end - self.window : end])
                whole = end == self.window
                if self.fast:
                    pending.append(self.pool.submit(self.flagged, text))
                elif self.flagged(text):
                    cut = True
                    break
                elif self.inner.request.stream:  # passed: send what it covered
                    yield from held[: end - sent]
                    held, sent = held[end - sent :], end
                end += self.step
            else:
                whole = False
            if self.fast and any(f.done() and f.result() for f in pending):
                cut = True
                break
        if cut or done is None:
            self.inner.cancel()  # the model stops; its last event says how much it did
            done = _last(source, done)
        elif any(f.result() for f in pending) or (texts and not whole and self.flagged("".join(texts))):
            cut = True
        if not cut:
            yield from held
            yield done
            return
        yield replace(done, finish_reason="content_filter")

    def __iter__(self) -> Iterator[Delta | Done]:
        return self.events()


def _last(source: Iterator[Delta | Done], done: Done | None) -> Done:
    for event in source:
        if isinstance(event, Done):
            return event
    assert done is not None, "a generation always ends with Done"
    return done
