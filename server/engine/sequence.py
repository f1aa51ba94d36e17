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
from typing import Callable

import llama_cpp.llama_cpp as lc

from server.engine.decoder_types import SamplingParams
from server.engine.sampling import TextAssembler

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
        "text",
        "finish_reason",
        "cancel_requested",
        "t_add",
        "t_start",
        "t_first",
        "t_end",
    )

    def __init__(
        self, seq_id: int, prompt: list[int], params: SamplingParams, on_event: Callable[[object], None]
    ) -> None:
        self.id, self.prompt, self.params, self.on_event = seq_id, prompt, params, on_event
        self.state, self.slot, self.n_past, self.i_batch = WAITING, None, 0, -1
        self.next_token, self.n_generated, self.n_cached, self.chain = -1, 0, 0, None
        self.tokens: list[int] = []  # generated tokens, end-of-generation token excluded
        self.text = TextAssembler(params.stop)
        self.finish_reason: str | None = None
        self.cancel_requested = False
        self.t_add, self.t_start, self.t_first, self.t_end = time.perf_counter(), 0.0, 0.0, 0.0

    @property
    def done(self) -> bool:
        return self.state == DONE


class Pieces:
    """token id -> its text bytes, or EOG; stepping thread only (one shared buffer)."""

    def __init__(self, vocab) -> None:
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

    def _piece(self, token: int) -> bytes:
        n = lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # the piece is longer than the buffer: llama.cpp says how long, as -n
            self._buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        return self._buf.raw[: max(n, 0)]
