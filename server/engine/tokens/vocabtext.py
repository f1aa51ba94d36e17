"""Token ids -> text for /tokenize and /detokenize, read from the model's vocabulary.

These only read the vocabulary, so any thread may call them while the engine's worker
decodes; each call has its own buffer (the decoder's piece cache, sequence.Pieces,
shares one and belongs to the stepping thread).
"""

from __future__ import annotations

import ctypes

import llama_cpp.llama_cpp as lc


def piece(vocab: object, token: int) -> bytes:  # vocab: a llama_vocab pointer
    """The bytes one token stands for, special tokens rendered (may be part of a UTF-8 character)."""
    buf = ctypes.create_string_buffer(64)
    n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    if n < 0:  # longer than the buffer: llama.cpp says how long, as -n
        buf = ctypes.create_string_buffer(-n)
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
    return buf.raw[: max(n, 0)]


def detokenize(vocab: object, tokens: list[int]) -> str:
    """The text of `tokens`, llama.cpp's inverse of tokenizing with special tokens parsed:
    special tokens rendered, none removed, the tokenizer's own leading space taken off."""
    ids = (lc.llama_token * len(tokens))(*tokens)
    size = max(64, 8 * len(tokens))
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = lc.llama_detokenize(vocab, ids, len(tokens), buf, size, False, True)
        if n >= 0:
            return buf.raw[:n].decode("utf-8", errors="replace")
        size = -n  # too small: llama.cpp says how much it needs
    raise RuntimeError(f"llama_detokenize needed {size} bytes and still failed")
