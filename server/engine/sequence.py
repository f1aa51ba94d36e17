"""One request inside the batch decoder: its record, and the bytes its tokens stand for.

`Sequence` is what the decoder keeps per request (slot, position, sampler chain,
generated tokens, text assembly, timings); its `state` moves WAITING -> PREFILL
-> DECODING -> DONE. `Pieces` turns sampled token ids into their bytes, memoized
(a dict hit per token instead of two calls into llama.cpp), and marks
end-of-generation tokens with EOG.
"""

from __future__ import annotations

import ctypes
import time
from typing import TYPE_CHECKING, Callable

import llama_cpp.llama_cpp as lc

from server.engine.decoder_types import Event, SamplingParams, Timings
from server.engine.sampling import TextAssembler
from server.engine.speculation.speculator import DraftState

if TYPE_CHECKING:
    from server.engine.constraints.sampler import ConstrainedSampler
    from server.engine.logprobs import Before, TokenLogprob
    from server.engine.slots import Slot

WAITING, PREFILL, DECODING, DONE = range(4)
EOG = None  # what Pieces gives for an end-of-generation token


class Sequence:
    """Handle for one request inside the decoder; events go to its `on_event`."""

    __slots__ = (
        "id",
        "prompt",
        "params",
        "on_event",
        "state",
        "slot",
        "n_past",
        "i_batch",
        "next_token",
        "tokens",
        "n_generated",
        "n_cached",
        "chain",
        "constraint",
        "before",
        "pending",
        "text",
        "finish_reason",
        "cancel_requested",
        "t_add",
        "t_start",
        "t_first",
        "t_end",
        "spec",
    )
    slot: Slot | None  # None until admitted
    chain: int | None  # its llama.cpp sampler chain; None when greedy or ended
    constraint: ConstrainedSampler | None
    before: Before | None

    def __init__(
        self, seq_id: int, prompt: list[int], params: SamplingParams, on_event: Callable[[Event], None]
    ) -> None:
        self.id, self.prompt, self.params, self.on_event = seq_id, prompt, params, on_event
        self.state, self.slot, self.n_past, self.i_batch = WAITING, None, 0, -1
        self.next_token, self.n_generated, self.n_cached, self.chain = -1, 0, 0, None
        self.constraint = None  # constrained.ConstrainedSampler when the request has a grammar
        self.before = None  # logprobs.Before of the token being sampled, when logprobs were asked for
        self.pending: list[TokenLogprob] = []  # logprobs.TokenLogprob of tokens whose text is not out yet
        self.tokens: list[int] = []  # generated tokens, end-of-generation token excluded
        self.spec: DraftState | None = None  # speculation, when the decoder drafts
        self.text = TextAssembler(params.stop)
        self.finish_reason: str | None = None
        self.cancel_requested = False
        self.t_add, self.t_start, self.t_first, self.t_end = time.perf_counter(), 0.0, 0.0, 0.0

    @property
    def done(self) -> bool:
        return self.state == DONE

    def timings(self) -> Timings:
        """Its timings, once ended: queued, prompt, generation and total milliseconds, tokens/s."""
        start = self.t_start or self.t_end
        first = self.t_first or self.t_end
        ms = 1000.0
        span = self.t_end - first
        rate = (self.n_generated - 1) / span if self.n_generated > 1 and span > 0 else 0.0
        drafted, accepted = (self.spec.drafted, self.spec.accepted) if self.spec is not None else (0, 0)
        return Timings(
            (start - self.t_add) * ms,
            (first - start) * ms,
            span * ms,
            (self.t_end - self.t_add) * ms,
            rate,
            drafted,
            accepted,
        )


class Pieces:
    """token id -> its text bytes, or EOG; stepping thread only (one shared buffer)."""

    def __init__(self, vocab: object) -> None:  # a llama_vocab pointer
        self._vocab, self._buf = vocab, ctypes.create_string_buffer(256)
        self._known: dict[int, bytes | None] = {}

    def __call__(self, token: int) -> bytes | None:
        if token in self._known:
            return self._known[token]
        if lc.llama_vocab_is_eog(self._vocab, token):
            piece = EOG
        else:
            piece = self._piece(token)
        self._known[token] = piece
        return piece

    def text_bytes(self, token: int) -> bytes:
        """The token's bytes; an end-of-generation token's own text (e.g. b"<end_of_turn>")."""
        piece = self(token)
        return self._piece(token, special=True) if piece is EOG else piece

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, special)
        if n < 0:  # the piece is longer than the buffer: llama.cpp says how long, as -n
            self._buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, special)
        return self._buf.raw[: max(n, 0)]
