"""After a decode: choosing each sequence's token from its logits, and what a token does to it.

Mixed into BatchDecoder (server/engine/batching.py), on the stepping thread only.
`_sample` picks the token for one batch row (greedy in Python, a llama.cpp sampler
chain, or a grammar-constrained pick), recording log-probabilities first when asked,
and advances the sampler's state by it (the chain's penalties and random numbers, the
grammar), as llama.cpp's sample-then-accept does: a verified draft samples its rows one
after the other, each after the tokens kept before it (server/engine/speculation/speculator.py);
`_on_token` turns it into text (stop strings, UTF-8 held back until whole), events
and the end of the sequence; `_finish` ends a sequence and gives its slot back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import llama_cpp.llama_cpp as lc
import numpy as np

from server.engine.decoder_types import DecoderConfig, Ended, Event, Usage
from server.engine.logprobs import Before
from server.engine.request import Delta
from server.engine.sampling import apply_bias, bias_entries, free_sampler_chain, greedy_token
from server.engine.sequence import DECODING, DONE, EOG, Pieces, Sequence
from server.engine.slots import SlotTable
from server.engine.speculation.speculator import Speculator

log = logging.getLogger("server.engine.batching")


class TokenFlow:
    cfg: DecoderConfig
    _c: Any  # llama_context pointer
    _vocab: Any
    _n_vocab: int
    _eog: list[int] | None
    _pieces: Pieces
    _spec: Speculator | None
    _table: SlotTable
    _batch: Any  # the step's llama_batch (server/engine/batching.py)
    _logits: np.ndarray  # its logits flags
    _out: np.ndarray | None  # this step's logits, rows in batch order (None until read)
    _out_rows: np.ndarray  # batch row -> row of _out

    def _sample(self, seq: Sequence, i: int | None = None, extra: list[int] | tuple[int, ...] = ()) -> int:
        """The token for the logits at batch row `i` (default: the sequence's own row), accepted
        into the sequence's sampler chain or grammar; `extra`: tokens accepted after seq.tokens
        but not yet emitted (a verified draft)."""
        i, p = seq.i_batch if i is None else i, seq.params
        if seq.chain is not None and p.logprobs is None:
            return int(lc.llama_sampler_sample(seq.chain, self._c, i))
        logits = self._logits_row(i)
        if p.logprobs is not None:  # read before sampling changes the logits in place
            seq.before = Before(logits, p.logprobs)
        if seq.chain is not None:
            return int(lc.llama_sampler_sample(seq.chain, self._c, i))
        history = [*seq.tokens, *extra] if extra else seq.tokens
        recent = history[-p.repeat_last_n :] if p.repeat_last_n > 0 else []
        if seq.constraint is not None:
            token = seq.constraint.sample(logits, recent)
            if self._pieces(token) is not EOG:  # the grammar takes it now: the next row is sampled after it
                seq.constraint.accept(token)
            return token
        if p.logit_bias or p.ignore_eos:
            apply_bias(logits, bias_entries(p, self._eog_tokens() if p.ignore_eos else None))
        return greedy_token(logits, recent, p)

    def _logits_row(self, i: int) -> np.ndarray:
        """Batch row `i`'s logits: a view of llama.cpp's output buffer, which holds the rows that
        asked for logits in batch order. Read once per step (one synchronization with the
        device and one array), not once per row."""
        if self._out is None:
            flags = self._logits[: self._batch.batch.n_tokens]
            self._out_rows = np.cumsum(flags, dtype=np.int64) - 1
            n_out = int(self._out_rows[-1]) + 1
            self._out = np.ctypeslib.as_array(lc.llama_get_logits(self._c), shape=(n_out, self._n_vocab))
        row: np.ndarray = self._out[self._out_rows[i]]
        return row

    def _eog_tokens(self) -> list[int]:
        """Every end-of-generation token id, found once (a scan of the vocabulary) when needed."""
        if self._eog is None:
            self._eog = [t for t in range(self._n_vocab) if lc.llama_vocab_is_eog(self._vocab, t)]
        return self._eog

    def _on_token(self, seq: Sequence, token: int) -> None:
        if seq.n_generated == 0:
            seq.t_first = time.perf_counter()
        seq.n_generated += 1
        piece = self._pieces(token)
        if piece is EOG:
            return self._finish(seq, "stop")
        if seq.before is not None:
            seq.pending.append(seq.before.record(token, self._pieces.text_bytes))
        seq.tokens.append(token)
        text, hit = seq.text.feed(piece)
        if text:
            self._emit(seq, Delta(text, tuple(seq.pending)))
            seq.pending.clear()
            if seq.state == DONE:  # its consumer failed
                return
        if hit:
            self._finish(seq, "stop")
        elif seq.n_generated >= seq.params.max_tokens or seq.n_past + 1 >= self.cfg.n_ctx_per_seq:
            self._finish(seq, "length")
        else:
            seq.next_token, seq.state = token, DECODING

    def _finish(self, seq: Sequence, reason: str) -> None:
        if reason in ("stop", "length"):
            tail = seq.text.flush()
            if tail:
                self._emit(seq, Delta(tail, tuple(seq.pending)))
                if seq.state == DONE:  # its consumer failed and it ended as an error
                    return
        seq.state, seq.finish_reason, seq.t_end = DONE, reason, time.perf_counter()
        if self._spec is not None and seq.spec is not None and seq.slot is not None:
            self._spec.end(seq.slot.id)
        self._free_samplers(seq)
        if seq.slot is not None:
            # A cancelled or failed sequence's cells may be half-written: never reuse them.
            self._table.release(seq.slot, keep_cache=reason in ("stop", "length"))
        self._emit(seq, Ended(reason, Usage(len(seq.prompt), len(seq.tokens), seq.n_cached), seq.timings()))

    def _emit(self, seq: Sequence, event: Event) -> None:
        try:
            seq.on_event(event)
        except Exception:  # a broken consumer must not stop the other streams: end only its own
            log.exception("the consumer of sequence %d failed on %s; ending it", seq.id, type(event).__name__)
            if seq.state != DONE:
                self._finish(seq, "error")

    @staticmethod
    def _free_samplers(seq: Sequence) -> None:
        free_sampler_chain(seq.chain)
        seq.chain = None
        if seq.constraint is not None:
            seq.constraint.free()
            seq.constraint = None
