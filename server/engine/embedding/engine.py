"""The engine's embedding side: `Engine.embed` and `Engine.rerank`, mixed into Engine.

Inputs are tokenized and checked in the caller's thread (server/engine/embedding/inputs.py),
then the job waits in its own queue; a WAKE token in the engine's main queue wakes an
idle worker, which moves every queued job into the Embedder and runs one embedding batch
per turn of its loop, beside the generating step when the model does both. Embedding
jobs share the engine's admission count (PARALLEL + QUEUE_SIZE requests at once).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from server.engine.embedding.inputs import embed_sequences, rank_sequences
from server.engine.embedding.jobs import EmbedJob, EmbedRequest, RankRequest
from server.errors import InvalidRequest, QueueFull
from server.settings import Settings

if TYPE_CHECKING:
    from server.engine.embedding.embedder import Embedder

log = logging.getLogger(__name__)

WAKE = object()  # put in the main queue: "embedding work is waiting"


class EmbeddingEngine:
    settings: Settings
    info: dict[str, Any]
    _embedder: "Embedder | None"
    _queue: queue.SimpleQueue[Any]
    _admitted: int
    _admission: threading.Lock
    _n_slots: int

    def _init_embedding(self) -> None:
        self._embedder = None
        self._embed_queue: queue.SimpleQueue[EmbedJob] = queue.SimpleQueue()
        self._wake_pending = 0  # 1 while a WAKE token is in the main queue

    def check_ready(self) -> None: ...

    def embed(self, request: EmbedRequest) -> EmbedJob:
        """Tokenize and check `request` here, then queue it; wait on the returned job."""
        embedder = self._embedder_for("embed")
        sequences = embed_sequences(request, embedder.facts, self.settings.embed_max_inputs)
        return self._queue_job(sequences, request.timeout)

    def rerank(self, request: RankRequest) -> EmbedJob:
        """Score each document against the query with the model's classification head."""
        embedder = self._embedder_for("rerank")
        sequences = rank_sequences(request, embedder.facts, self.settings.embed_max_inputs)
        return self._queue_job(sequences, request.timeout)

    def _embedder_for(self, use: str) -> "Embedder":
        self.check_ready()
        embedder, name = self._embedder, self.info.get("model", "the model")
        if embedder is None:
            raise InvalidRequest(
                f"the model '{name}' does not embed: its file names no pooling. Set POOLING (mean, cls or "
                "last) to embed with a chat model",
                "model",
            )
        if (use == "rerank") != embedder.rank:
            if use == "rerank":
                why = f"its pooling is '{embedder.cfg.pooling}'; reranking needs a reranker (pooling 'rank')"
            else:
                why = "it is a reranker (pooling 'rank'): ask /v1/rerank"
            raise InvalidRequest(f"the model '{name}' does not {use}: {why}", "model")
        return embedder

    def _queue_job(self, sequences: list[list[int]], timeout: float | None) -> EmbedJob:
        assert self._embedder is not None
        deadline = time.monotonic() + (timeout or self.settings.request_timeout)
        job = EmbedJob(sequences, self._embedder.cfg.pooling, deadline)
        with self._admission:
            if self._admitted >= self._n_slots + self.settings.queue_size:
                raise QueueFull(self.settings.queue_size)
            self._admitted += 1
        job.on_done = self._embed_done
        self._embed_queue.put(job)
        with self._admission:  # one WAKE in the main queue at most: it would count as a waiting request
            wake, self._wake_pending = not self._wake_pending, 1
        if wake:
            self._queue.put(WAKE)
        return job

    def _woken(self) -> None:
        """The worker took the WAKE token (jobs queued after this put another)."""
        with self._admission:
            self._wake_pending = 0

    def _embed_done(self, job: EmbedJob) -> None:
        with self._admission:
            self._admitted -= 1

    # --- the worker thread ------------------------------------------------------------------
    def _take_embeds(self) -> None:
        """Move queued embedding jobs into the Embedder."""
        while True:
            try:
                job = self._embed_queue.get_nowait()
            except queue.Empty:
                return
            if self._embedder is not None:
                self._embedder.add(job)

    @property
    def _embedding(self) -> bool:
        """Whether embedding work is waiting in the Embedder."""
        return self._embedder is not None and self._embedder.busy

    def _embed_step(self) -> None:
        assert self._embedder is not None
        try:
            self._embedder.step()
        except Exception:
            log.exception("an embedding batch failed")  # its requests have failed; the worker carries on
