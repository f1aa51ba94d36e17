"""The seam between the engine and its decoder: what the engine's worker needs of one.

`BatchDecoder` (server/engine/batching.py) is the real one. A test may hand the
engine another object with these members to produce conditions real inference
cannot on demand (a decode error in the middle of a batch, a step that raises).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from server.engine.decoder_types import DecoderStats, Event
from server.engine.request import SamplingParams

# What `add` returns: the decoder's own record of a sequence, only ever given back to `cancel`.
Handle = Any


class Decoder(Protocol):
    """Sequences join with `add`, advance one token per `step`, and report through their
    `on_event` callback (request.Delta, then one decoder_types.Ended) during `step`."""

    @property
    def n_ctx(self) -> int:
        """The context one request gets, in tokens."""
        ...

    @property
    def n_vocab(self) -> int:
        """Token ids are below this."""
        ...

    @property
    def n_slots(self) -> int:
        """How many sequences can decode together."""
        ...

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Any thread: tokenizing only reads the vocabulary (so do text_of and piece_of)."""
        ...

    def text_of(self, tokens: list[int]) -> str: ...

    def piece_of(self, token: int) -> bytes: ...

    def add(self, prompt: list[int], params: SamplingParams, on_event: Callable[[Event], None]) -> Handle:
        """Queue a tokenized prompt; returns a handle for `cancel`."""
        ...

    def cancel(self, seq: Handle) -> None: ...

    def check_grammar(self, gbnf: str) -> None:
        """Raise grammar.GrammarError unless the decoder can sample under `gbnf` (any thread)."""
        ...

    # True when a step is computed on a device after `step` queued it: `on_launched` (the engine's)
    # is then called once it is queued, before its results are read, to work while it computes.
    asynchronous: bool
    on_launched: Callable[[], None] | None

    def step(self) -> int:
        """One decode over every running sequence; decoder_types.DecodeError if llama.cpp failed
        (the batch's sequences have then ended with "error")."""
        ...

    def stats(self) -> DecoderStats: ...

    def close(self) -> None: ...
