"""Embedding and reranking requests: what a dialect hands the engine, and the handle it waits on.

A dialect builds an `EmbedRequest` (texts or token lists) or a `RankRequest` (a query and
documents) and calls `Engine.embed` / `Engine.rerank`. Tokenizing, truncating and checking
happen there, in the caller's thread (server/engine/embedding/inputs.py), so a bad input fails
at once; the `EmbedJob` it gets back is filled by the engine's worker, which packs the
sequences of every waiting job into shared llama.cpp batches (server/engine/embedding/embedder.py).

The engine answers with raw pooled vectors (or per-token vectors for pooling "none", or
the classification head's outputs for "rank"); normalizing and shortening them is each
dialect's business, with `normalized` and `shortened` below (llama.cpp's rules).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from server.errors import ClientGone, RequestTimeout, ServerError

# llama.cpp's LLAMA_POOLING_TYPE_* values by name.
POOLING_IDS = {"none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
POOLING_NAMES = {v: k for k, v in POOLING_IDS.items()}

Input = str | tuple[int, ...]  # a text, or token ids used as they are


@dataclass(frozen=True)
class EmbedRequest:
    inputs: tuple[Input, ...]
    truncate: bool = True  # cut an input at the model's limit; False: 400 naming its token count
    single: bool = False  # the body gave one input, not a list of them: errors name `input`, not `input[0]`
    timeout: float | None = None  # seconds (None: the server's REQUEST_TIMEOUT)


@dataclass(frozen=True)
class RankRequest:
    query: str
    documents: tuple[str, ...]
    truncate: bool = True  # cut a document so query and document fit together
    timeout: float | None = None


@dataclass(frozen=True)
class Embeddings:
    """One request's answer, in the order of its inputs."""

    vectors: list[np.ndarray]  # float32: (n_embd,), per token (n, n_embd) for "none", head outputs for "rank"
    token_counts: list[int]  # tokens each input was embedded with (after truncation)
    pooling: str
    queue_ms: float  # from submit to its first batch
    compute_ms: float  # from its first batch to its last

    @property
    def prompt_tokens(self) -> int:
        return sum(self.token_counts)


class EmbedJob:
    """One request's tokenized sequences; the worker fills in a vector per sequence."""

    def __init__(self, sequences: list[list[int]], pooling: str, deadline: float) -> None:
        self.sequences, self.pooling, self.deadline = sequences, pooling, deadline
        self.submitted = time.monotonic()
        self.started: float | None = None  # its first batch
        self.on_done: Callable[[EmbedJob], None] | None = None  # the engine's admission count
        self.pending = list(range(len(sequences)))  # the worker's: inputs not yet in a batch
        self.last_step = -1  # the worker's: its last batch (-1: none yet)
        self._vectors: list[np.ndarray | None] = [None] * len(sequences)
        self._left = len(sequences)
        self._error: Exception | None = None
        self._done = threading.Event()
        self._cancelled = threading.Event()

    # --- the caller's side ------------------------------------------------------------
    def cancel(self) -> None:
        self._cancelled.set()

    def wait(self, client_gone: Callable[[], bool] | None = None, every: float = 0.25) -> Embeddings:
        """Block until every vector is in; the request's error if it failed. `client_gone` is
        asked every `every` seconds: a closed connection cancels the job."""
        give_up = self.deadline + 30  # the worker always ends a job; this only guards a wedged model
        while not self._done.wait(every if client_gone is not None else max(give_up - time.monotonic(), 0)):
            if client_gone is not None and client_gone():
                self.cancel()
                raise ClientGone("the client closed the connection")
            if time.monotonic() >= give_up:
                self.cancel()
                raise RequestTimeout("the embeddings did not complete in time")
        if self._error is not None:
            raise self._error
        now = time.monotonic()
        started = self.started if self.started is not None else now
        vectors = [v for v in self._vectors if v is not None]
        return Embeddings(
            vectors,
            [len(s) for s in self.sequences],
            self.pooling,
            round((started - self.submitted) * 1000, 2),
            round((now - started) * 1000, 2),
        )

    # --- the worker's side ------------------------------------------------------------
    def interrupt(self) -> ServerError | None:
        """Why the worker should drop this job now, if it should."""
        if self._cancelled.is_set():
            return ClientGone("the request was cancelled")
        if time.monotonic() > self.deadline:
            return RequestTimeout("the embeddings did not complete within the request timeout")
        return None

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def put(self, index: int, vector: np.ndarray) -> None:
        if self.started is None:
            self.started = time.monotonic()
        self._vectors[index] = vector
        self._left -= 1
        if self._left == 0:
            self._finish()

    def fail(self, error: Exception) -> None:
        if not self._done.is_set():
            self._error = error
            self._finish()

    def _finish(self) -> None:
        self._done.set()
        if self.on_done is not None:
            self.on_done(self)


def normalized(vector: np.ndarray, norm: int = 2) -> np.ndarray:
    """llama.cpp's common_embd_normalize: -1 none, 0 max absolute scaled to int16's range,
    1 taxicab, 2 euclidean (L2), p > 2 the p-norm. Computed in float64, returned as float32."""
    v = vector.astype(np.float64)
    if norm < 0:
        return vector.astype(np.float32)
    if norm == 0:
        total = float(np.max(np.abs(v), initial=0.0)) / 32760.0
    elif norm == 2:
        total = float(np.sqrt(np.dot(v, v)))
    else:
        total = float(np.sum(np.abs(v) ** norm) ** (1.0 / norm))
    scale = 1.0 / total if total > 0.0 else 0.0
    return (v * scale).astype(np.float32)


def shortened(vector: np.ndarray, dimensions: int | None, norm: int = 2) -> np.ndarray:
    """The first `dimensions` values, normalized again (OpenAI's and Ollama's `dimensions`),
    else the whole vector normalized; `norm` as in `normalized`."""
    if dimensions is not None and dimensions < len(vector):
        vector = vector[:dimensions]
    return normalized(vector, norm)
