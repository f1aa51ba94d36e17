"""Facts about every token that constrained sampling needs, read once per model.

- `textless`: tokens whose text is empty (control tokens such as <|im_start|>). llama.cpp's
  grammar reads special tokens as their text, so it may let "<|im_start|>" into a JSON
  string, yet the answer never shows it: such tokens are never drawn under a grammar.
- `blank`: tokens that are only whitespace (the whitespace-run cap).
- `starting_with(bytes)`: every token whose text starts with one of those bytes. Any token
  a grammar allows starts with a byte the grammar allows at that place, and every byte
  has a one-byte token (byte-level vocabularies, or SentencePiece's <0xNN> fallback), so
  masking the one-byte tokens (256 of them) says which part of the vocabulary can hold
  allowed tokens at all: masking that part instead of all of it gives the same answer,
  for a fraction of the cost (a grammar decodes every piece it is shown).
Building it reads every piece once (about half a second for a 262k vocabulary).
"""

from __future__ import annotations

import ctypes

import llama_cpp.llama_cpp as lc
import numpy as np

_BLANK = frozenset(b" \t\n\r")


class VocabIndex:
    def __init__(self, vocab: object, n_vocab: int) -> None:
        first = np.full(n_vocab, -1, dtype=np.int16)  # first byte of each token's text; -1: no text
        self.blank = np.zeros(n_vocab, dtype=bool)
        single = np.full(256, -1, dtype=np.int64)
        buf, size = ctypes.create_string_buffer(256), 256
        to_piece, is_eog, string_at = lc.llama_token_to_piece, lc.llama_vocab_is_eog, ctypes.string_at
        for token in range(n_vocab):
            n = to_piece(vocab, token, buf, size, 0, False)
            if n == 0 or is_eog(vocab, token):
                continue
            if n < 0:  # longer than the buffer
                bigger = ctypes.create_string_buffer(-n)
                n = to_piece(vocab, token, bigger, len(bigger), 0, False)
                piece = bigger.raw[:n]
            else:
                piece = string_at(buf, n)
            first[token] = piece[0]
            self.blank[token] = set(piece) <= _BLANK
            if len(piece) == 1 and single[piece[0]] < 0:
                single[piece[0]] = token
        self.textless = first < 0
        order = np.argsort(first, kind="stable")
        bounds = np.searchsorted(first[order], np.arange(257))
        self._by_byte = [order[bounds[b] : bounds[b + 1]].astype(np.int32) for b in range(256)]
        self.single_bytes = np.flatnonzero(single >= 0)
        self.single_ids = single[self.single_bytes].astype(np.int32)
        # Bytes without a one-byte token cannot be tested: their tokens are always candidates.
        self.untestable = [b for b in range(256) if single[b] < 0 and len(self._by_byte[b])]

    def starting_with(self, allowed: np.ndarray) -> np.ndarray:
        """Token ids whose text starts with one of the `allowed` byte values (or an untestable one)."""
        parts = [self._by_byte[b] for b in (*allowed.tolist(), *self.untestable)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int32)
