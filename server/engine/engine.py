"""The engine: the only owner of the llama.cpp context, and its request queue.

Every HTTP dialect validates its JSON into one `Request` (server/engine/request.py),
calls `engine.submit(request)` and reads the returned `Generation`
(server/engine/generation.py): iterate it for `Delta` events and one final
`Done`, call `.cancel()` to stop it. Prompt rendering, tokenization and the context-fit check happen in the
caller's thread, so a bad request fails at once; a good one waits in a bounded
queue (QUEUE_SIZE: the admission control, 503 when full). Embeddings and reranking
(`embed`, `rerank`) are queued and batched on the same worker: server/engine/embedding/engine.py.

One worker thread drives the continuous-batching decoder (server/engine/batching.py,
through the small protocol in server/engine/protocol.py):
it moves queued generations into the decoder while a slot is free, steps while
any is running (one llama_decode for all of them per step) and blocks on the
queue when there is nothing to do. Between steps it reads each running
generation's cancel flag and deadline, so a client disconnect or a timeout
stops that sequence within one step. Only this thread touches the context; a
failed step is logged and reported to the requests in it, and the worker
carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from server.engine.constraints.request_grammar import conversation, gbnf_for, grammar_of
from server.engine.decoder_types import DecodeError, DecoderStats, Ended, Event
from server.engine.embedding.engine import WAKE, EmbeddingEngine
from server.engine.generation import Generation, GenerationRequest, done_event
from server.engine.protocol import Decoder, Handle
from server.engine.request import Delta, Done, Request
from server.errors import (
    GenerationFailed,
    InvalidRequest,
    ModelFailed,
    ModelLoading,
    PromptTooLong,
    QueueFull,
    RequestTimeout,
)
from server.model.files import ModelChoice
from server.model.prompt import Message, PromptFormat, Vocab, with_one_bos
from server.settings import Settings

if TYPE_CHECKING:  # loading imports the decoder; the worker imports it when it starts
    from server.engine.batching import BatchDecoder
    from server.engine.loading import Loader

log = logging.getLogger(__name__)

__all__ = ["Engine", "Generation", "Request", "Delta", "Done"]

# The error a client gets for a generation that ended this way (other reasons end normally).
ERRORS: dict[str, Callable[[], Exception]] = {
    "timeout": lambda: RequestTimeout("the answer did not complete within the request timeout"),
    "error": GenerationFailed,
}
STATE_ERRORS: dict[str, Callable[[], Exception]] = {
    "loading": lambda: ModelLoading("the model is still loading"),
    "failed": lambda: ModelFailed("the model failed to load; see the server log"),
    "stopped": lambda: ModelFailed("the server is shutting down"),
}


# How long a new request waits for others to share its first step: see Engine._take_new.
GATHER_SHARE = 0.05
GATHER_MAX_S = 0.02


class _Running:
    """A generation handed to the decoder, and why the engine stopped it (if it did)."""

    __slots__ = ("generation", "handed", "seq", "reason", "ended")
    seq: Handle  # the decoder's, once added
    reason: str | None

    def __init__(self, generation: Generation) -> None:
        self.generation, self.handed = generation, time.monotonic()
        self.seq, self.reason, self.ended = None, None, False


class Engine(EmbeddingEngine):  # embed() and rerank(): server/engine/embedding/engine.py
    # Set on the worker thread by _load, before the state becomes "ready".
    _decoder: Decoder
    _vocab: Vocab
    _format: PromptFormat
    _n_slots: int

    def __init__(
        self,
        settings: Settings,
        model: ModelChoice | None = None,
        decoder: BatchDecoder | None = None,
        loader: Loader | None = None,
    ) -> None:
        """`model`: a server.model.files.ModelChoice (resolved from the settings when None).
        `decoder`: an already loaded decoder to drive instead of loading one; its owner
        closes it (tests share one between engines that never run at the same time).
        `loader`: what loads it (default server.engine.loading.load), for a test that drives
        the engine with a decoder of its own making."""
        from server.model.files import resolve_model

        self.settings = settings
        self.model = model or resolve_model(settings.model)
        self._given = decoder
        self._owns_decoder = decoder is None
        self._loader = loader
        # Admission: at most PARALLEL running plus QUEUE_SIZE waiting. Counted under a lock
        # rather than by a bounded queue, so a burst into free slots is never refused just
        # because the worker has not yet taken the first requests off the queue.
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # Generation, WAKE, or None: stop
        self._init_embedding()
        self._admitted, self._admission = 0, threading.Lock()
        self._running: list[_Running] = []
        # Events of the last step, when the decoder runs on a device: handed to their readers
        # while the device computes the next step (see _deliver), not in the thread's way.
        self._outbox: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self._defer = False
        self.last_active = time.monotonic()  # when a request was last admitted or ended
        self.on_idle: Callable[[], None] | None = None  # called when its last request ends (the model library)
        self._ready = threading.Event()
        self.state = "loading"
        self.load_error: str | None = None  # why, once state is "failed"
        self.info: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._main, name="llama-engine", daemon=True)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        self._ready.wait(timeout)
        return self.state == "ready"

    def queue_depth(self) -> int:
        """Requests waiting for a free slot (a WAKE token for embedding work is none)."""
        return max(self._queue.qsize() - self._wake_pending, 0)

    @property
    def busy(self) -> bool:
        """Whether a request is running or queued."""
        return self._admitted > 0

    @property
    def active(self) -> int:
        """Generations in the decoder's slots (or about to take one at the next step)."""
        return len(self._running)

    def decoder_stats(self) -> DecoderStats | None:
        """The decoder's counters, None until loaded."""
        return self._decoder.stats() if self.state in ("ready", "stopped") else None

    @property
    def vocab(self) -> Vocab:
        return self._vocab

    def submit(self, request: Request, on_done: Callable[[Done], None] | None = None) -> Generation:
        """Render, tokenize and check `request`, then queue it; returns its handle at once.

        Prompt building runs here, in the caller's thread, so a bad request fails before it
        waits. A conversation without a system message gets the SYSTEM_PROMPT setting, if any.
        A raw prompt has no template, and its special tokens are parsed, as llama.cpp's server
        does: whoever writes a raw prompt writes all of it.
        """
        self.check_ready()
        if not self._n_slots:
            raise InvalidRequest(f"the model '{self.info.get('model')}' only embeds: it does not generate", "model")
        if request.prompt is not None:
            tokens = with_one_bos(self._vocab.tokenize(request.prompt, True), self._vocab)
        else:
            messages = list(request.messages)
            if self.settings.system_prompt and not any(m.role == "system" for m in messages):
                messages.insert(0, Message("system", self.settings.system_prompt))
            tokens = self._format.tokens(conversation(request, messages), self._vocab)
        return self._enqueue(tokens, request, on_done)

    def submit_tokens(
        self, tokens: list[int], request: Request, on_done: Callable[[Done], None] | None = None
    ) -> Generation:
        """Queue a prompt its caller has tokenized (the guard's, server/safety/guard.py: its
        template text may hold control tokens, its messages may not); `request` gives the rest."""
        self.check_ready()
        if not self._n_slots:
            raise InvalidRequest(f"the model '{self.info.get('model')}' only embeds: it does not generate", "model")
        return self._enqueue(list(tokens), request, on_done)

    # --- the vocabulary (/tokenize, /detokenize): it is only read, so any thread may ask ----
    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """Token ids of `text`, special tokens parsed as in a raw prompt; `add_special` adds
        what the model puts around a prompt (its BOS), so the count matches a raw prompt's."""
        self.check_ready()
        return self._decoder.tokenize(text, add_bos=add_special, special=True)

    def detokenize(self, tokens: list[int]) -> str:
        self._check_ids(tokens)
        return self._decoder.text_of(tokens)

    def pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's bytes (a piece may be part of a UTF-8 character)."""
        self._check_ids(tokens)
        return [self._decoder.piece_of(t) for t in tokens]

    def _check_ids(self, tokens: list[int]) -> None:
        self.check_ready()
        n_vocab = self._decoder.n_vocab
        for i, t in enumerate(tokens):
            if not 0 <= t < n_vocab:  # llama.cpp would read past its vocabulary
                raise InvalidRequest(f"'tokens[{i}]' must be a token id from 0 to {n_vocab - 1}", f"tokens[{i}]")

    def check_ready(self) -> None:
        """Raise the error a request gets while the model is loading or failed to load."""
        if self.state != "ready":
            raise STATE_ERRORS[self.state]()

    def _enqueue(self, tokens: list[int], request: Request, on_done: Callable[[Done], None] | None) -> Generation:
        params = request.sampling
        grammar = grammar_of(request)
        if grammar is not None:
            params = replace(params, grammar=gbnf_for(grammar, self._decoder.check_grammar))
        unknown = [t for t, _ in params.logit_bias if t >= self._decoder.n_vocab]
        if unknown:
            raise InvalidRequest(
                f"'logit_bias' names token {unknown[0]}; the model's token ids are below {self._decoder.n_vocab}",
                "logit_bias",
            )
        if len(tokens) + params.max_tokens > self._decoder.n_ctx:
            raise PromptTooLong(len(tokens), params.max_tokens, self._decoder.n_ctx)
        deadline = time.monotonic() + (request.timeout or self.settings.request_timeout)
        generation = Generation(GenerationRequest(tuple(tokens), params, request.stream, deadline), on_done)
        with self._admission:
            if self._admitted >= self._n_slots + self.settings.queue_size:
                raise QueueFull(self.settings.queue_size)
            self._admitted += 1
            self.last_active = time.monotonic()
        self._queue.put(generation)
        return generation

    def close(self, timeout: float = 30) -> None:
        """Finish what is queued and running, then stop the worker (and free the model it loaded)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    # --- the worker thread ------------------------------------------------------------
    def _main(self) -> None:
        try:
            self._load()
        except Exception as exc:
            # One line, no traceback: under gunicorn a failed load stops the server
            # (server/gunicorn.conf.py), and this line is what the operator reads.
            reason = " ".join(str(exc).split()) or type(exc).__name__
            self.load_error = f"cannot load the model file {self.model.path}: {reason}"
            log.error("%s", self.load_error)
            log.debug("the load failed here", exc_info=True)
            self.state = "failed"
            self._ready.set()
            return
        self.state = "ready"
        self._ready.set()
        try:
            self._serve()
        finally:
            self.state = "stopped"
            if self._embedder is not None:
                self._embedder.close()
            if self._owns_decoder:
                self._decoder.close()

    def _load(self) -> None:
        from server.engine.loading import load

        loaded = (self._loader or load)(self.settings, self.model, self._given)
        self._decoder, self._vocab, self._format = loaded.decoder, loaded.vocab, loaded.prompt_format
        self._n_slots = loaded.decoder.n_slots
        if getattr(loaded.decoder, "asynchronous", False):  # a test's decoder may not say
            self._defer = True
            loaded.decoder.on_launched = self._deliver
        self.info = loaded.info
        self._embedder = loaded.embedder

    def _serve(self) -> None:
        """Until close(): take new work while slots are free, stop interrupted sequences, step."""
        stopping = False
        while not stopping or self._running or self._embedding:
            if not stopping:
                stopping = self._take_new()
            self._check_interrupts()
            if self._running:
                self._step()
            self._take_embeds()
            if self._embedding:
                self._embed_step()

    def _take_new(self) -> bool:
        """Hand queued generations to the decoder while it has free slots, waiting for one
        only when nothing is running. True once close() has asked the worker to stop.

        Requests often come together (clients answered in the same step ask again at
        once); prompts evaluated in the same step share one pass over the weights, which
        on a CPU costs about as much as the prompts themselves. So once a new request is
        taken, companions are awaited for a moment: GATHER_SHARE of a typical step, at
        most GATHER_MAX_S (~15 ms for a 7B model on a CPU, under 1 ms for Gemma 270M).
        Embedding jobs need no slot: they move into the Embedder at every turn of the loop."""
        gather_until = None
        while True:
            self._take_embeds()
            idle = not self._running and not self._embedding
            if not idle and len(self._running) >= self._n_slots:
                return False
            if idle:
                wait = None  # idle: sleep until work comes
            else:
                wait = 0.0 if gather_until is None else max(gather_until - time.monotonic(), 0.0)
            try:
                generation = self._queue.get(block=wait != 0.0, timeout=wait)
            except queue.Empty:
                return False
            if generation is None:
                return True
            if generation is WAKE:  # embedding jobs came: taken at the top of the loop, no gathering
                self._woken()
                continue
            self._start(generation)
            if gather_until is None:
                gather_until = time.monotonic() + self._gather_seconds()

    def _gather_seconds(self) -> float:
        stats = self._decoder.stats()
        return min(GATHER_MAX_S, GATHER_SHARE * stats.decode_seconds / stats.steps) if stats.steps else 0.0

    def _start(self, generation: Generation) -> None:
        entry = _Running(generation)
        reason = generation.interrupt_reason()
        if reason is not None:  # cancelled or expired while queued: never touch the model
            return self._end(entry, reason)
        r = generation.request
        try:
            entry.seq = self._decoder.add(list(r.prompt_tokens), r.params, lambda event: self._on_event(entry, event))
        except Exception:
            log.exception("the decoder refused a request")
            return self._end(entry, "error")
        self._running.append(entry)

    def _check_interrupts(self) -> None:
        for entry in self._running:
            if entry.reason is None and (reason := entry.generation.interrupt_reason()) is not None:
                entry.reason = reason
                self._decoder.cancel(entry.seq)  # takes effect at the start of the next step

    def _step(self) -> None:
        try:
            if not self._decoder.step():
                self._deliver()  # nothing was launched to deliver them beside
        except DecodeError:
            log.exception("llama.cpp failed to decode a batch")  # its sequences have ended as errors
        except Exception:
            log.exception("the decode step failed")
            for entry in list(self._running):
                self._decoder.cancel(entry.seq)
                self._end(entry, "error")

    def _on_event(self, entry: _Running, event: Event) -> None:
        """The decoder's events for one sequence, during step() on this thread."""
        if entry.ended:
            return
        if type(event) is Delta:
            return self._send(entry.generation.put, event)
        assert isinstance(event, Ended)
        reason = event.finish_reason
        if reason == "cancelled" and entry.reason:
            reason = entry.reason  # "timeout" when the deadline passed
        self._end(entry, reason, event)

    def _end(self, entry: _Running, reason: str, ended: Ended | None = None) -> None:
        entry.ended = True
        if entry in self._running:
            self._running.remove(entry)
        with self._admission:
            self._admitted -= 1
            self.last_active, idle = time.monotonic(), self._admitted == 0
        error = ERRORS.get(reason)
        self._send(
            entry.generation.finish,
            done_event(entry.generation, entry.handed, reason, ended),
            error() if error else None,
        )
        if not self._running:
            self._deliver()
        if idle and self.on_idle is not None:
            self.on_idle()

    def _send(self, call: Callable[..., None], *args: Any) -> None:
        """Hand an event to its reader: at once, or with the others of its step (see _outbox)."""
        if self._defer:
            self._outbox.append((call, args))
        else:
            call(*args)

    def _deliver(self) -> None:
        """Hand the held events to their readers, in the order they came."""
        outbox, self._outbox = self._outbox, []
        for call, args in outbox:
            call(*args)
