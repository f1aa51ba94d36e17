"""The engine: the only owner of the llama.cpp context, and its request queue.

HTTP handlers validate, call `engine.submit(request)` and read the returned
`Generation`: iterate it for `Delta` events and one final `Finished`, call
`.cancel()` to stop it. Prompt rendering, tokenization and the context-fit check
happen in `submit`, in the caller's thread, so a bad request fails at once; a
good one waits in a bounded queue for the single worker thread, which hands it
to the decoder (server/decoder.py). One worker means requests never touch the
context concurrently; a failure inside a generation is logged and reported to
that request only, and the worker carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from server import describe
from server.errors import (GenerationFailed, ModelFailed, ModelLoading, PromptTooLong, QueueFull,
                           RequestTimeout)
from server.prompt import Message, build_messages, with_one_bos

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int | None


@dataclass(frozen=True)
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    deadline: float  # time.monotonic() by which the answer must be complete


@dataclass(frozen=True)
class Delta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" | "length", or "cancelled" | "timeout" | "error" (never shown to a client)
    usage: dict
    timings: dict


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
        while True:
            # The worker always ends a generation; the wait bound only guards against a wedged model.
            wait = max(self.request.deadline - time.monotonic(), 0) + 30
            try:
                event = self._events.get(timeout=wait)
            except queue.Empty:
                self.cancel()
                raise RequestTimeout("the answer did not complete in time") from None
            if isinstance(event, Exception):
                raise event
            yield event
            if isinstance(event, Finished):
                return

    # Worker side.
    def _emit(self, text: str) -> None:
        self._events.put(Delta(text))

    def _end(self, finished: Finished, error: Exception | None = None) -> None:
        self._events.put(error or finished)
        if self._on_done is not None:
            try:
                self._on_done(finished)
            except Exception:  # a broken observer must not take the worker down
                log.exception("on_done callback failed")


class Engine:
    def __init__(self, settings, model=None, decoder_factory=None):
        """`model`: a server.models.ModelChoice (resolved from the settings when None)."""
        from server.models import resolve_model
        self.settings = settings
        self.model = model or resolve_model(settings.model)
        self._decoder_factory = decoder_factory
        self._queue: queue.Queue[Generation | None] = queue.Queue(maxsize=settings.queue_size)
        self._ready = threading.Event()
        self.state = "loading"
        self.active = 0
        self.info: dict = {}
        self._thread = threading.Thread(target=self._main, name="llama-engine", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.state == "ready"

    def queue_depth(self) -> int:
        return self._queue.qsize()

    @property
    def vocab(self):
        return self._vocab

    def submit(self, req, on_done: Callable[[Finished], None] | None = None,
               timeout: float | None = None) -> Generation:
        """Render, tokenize and check `req` (a validation.RespondRequest), then queue it.

        `timeout`: seconds the answer may take, queue wait included (default: REQUEST_TIMEOUT).
        """
        self.check_ready()
        messages = build_messages(req.system if req.system is not None else self.settings.system_prompt,
                                  req.history, req.query)
        return self._enqueue(self._format.tokens(messages, self._vocab), req, on_done, timeout)

    def submit_messages(self, messages: list[Message], req, on_done: Callable[[Finished], None] | None = None,
                        timeout: float | None = None) -> Generation:
        """Like `submit`, for a conversation already built (an OpenAI message list); `req` gives
        the limits and sampling (max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, seed,
        stop, stream)."""
        self.check_ready()
        return self._enqueue(self._format.tokens(messages, self._vocab), req, on_done, timeout)

    def submit_prompt(self, text: str, req, on_done: Callable[[Finished], None] | None = None,
                      timeout: float | None = None) -> Generation:
        """Like `submit`, for raw text with no chat template (/v1/completions). Special tokens in
        the text are parsed, as llama.cpp's server does: whoever writes a raw prompt writes all of it."""
        self.check_ready()
        return self._enqueue(with_one_bos(self._vocab.tokenize(text, True), self._vocab), req, on_done, timeout)

    def check_ready(self) -> None:
        """Raise the error a request gets while the model is loading or failed to load."""
        if self.state != "ready":
            raise ModelLoading("the model is still loading") if self.state == "loading" else \
                ModelFailed("the model failed to load; see the server log")

    def _enqueue(self, tokens: list[int], req, on_done, timeout) -> Generation:
        if len(tokens) + req.max_tokens > self._decoder.n_ctx:
            raise PromptTooLong(len(tokens), req.max_tokens, self._decoder.n_ctx)
        sampling = Sampling(req.temperature, req.top_p, req.top_k, req.min_p, req.repeat_penalty, req.seed)
        generation = Generation(GenerationRequest(tuple(tokens), req.max_tokens, sampling, req.stop, req.stream,
                                                  time.monotonic() + (timeout or self.settings.request_timeout)), on_done)
        try:
            self._queue.put_nowait(generation)
        except queue.Full:
            raise QueueFull(self.settings.queue_size) from None
        return generation

    def close(self, timeout: float = 30) -> None:
        """Finish what is queued, then stop the worker."""
        if self._thread.is_alive():
            self._queue.put(None, timeout=timeout)
            self._thread.join(timeout)

    def _main(self) -> None:
        try:
            self._load()
        except Exception:
            log.exception("loading %s failed", self.model.path)
            self.state = "failed"
            self._ready.set()
            return
        self.state = "ready"
        self._ready.set()
        while (generation := self._queue.get()) is not None:
            self.active = 1
            try:
                self._run(generation)
            finally:
                self.active = 0

    def _load(self) -> None:
        from server.decoder import LlamaDecoder
        from server.offload import resolve_offload
        from server.prompt import choose_format
        plan = resolve_offload(self.settings, self.model.path)
        self._decoder = (self._decoder_factory or LlamaDecoder)(self.model.path, self.settings, plan.n_gpu_layers)
        self._vocab = self._decoder.vocab()
        template, prompt_format = describe.chat_template(self.settings, self._decoder.metadata)
        self._format = choose_format(template)
        self.info = describe.model_info(self.model, self._decoder, plan, prompt_format)
        describe.announce(self.info, self.model)

    def _run(self, generation: Generation) -> None:
        started = time.monotonic()
        request = generation.request
        usage = {"prompt_tokens": len(request.prompt_tokens), "completion_tokens": 0,
                 "total_tokens": len(request.prompt_tokens)}
        timings = {"queue_ms": round((started - generation.submitted) * 1000, 2), "prompt_ms": 0.0,
                   "generation_ms": 0.0, "tokens_per_second": 0.0}
        reason = generation.interrupt_reason()
        if reason is not None:  # cancelled or expired while waiting: never touch the model
            return generation._end(Finished(reason, usage, timings), _error_for(reason))
        try:
            result = self._decoder.run(request, generation._emit, generation.interrupt_reason)
        except Exception:
            log.exception("generation failed")
            return generation._end(Finished("error", usage, timings), GenerationFailed())
        usage.update(completion_tokens=result.completion_tokens,
                     total_tokens=len(request.prompt_tokens) + result.completion_tokens)
        timings.update(prompt_ms=round(result.prompt_ms, 2), generation_ms=round(result.generation_ms, 2),
                       tokens_per_second=round(result.tokens_per_second, 2))
        finished = Finished(result.finish_reason, usage, timings)
        generation._end(finished, _error_for(result.finish_reason))


def _error_for(reason: str) -> Exception | None:
    if reason == "timeout":
        return RequestTimeout("the answer did not complete within the request timeout")
    return None
