"""What the decoder can tell about its model, so the caller needs no second copy of the weights.

Tokens (server/engine/tokens/tokenizing.py) and their text, metadata, the chat template, grammar checks and
the vocabulary index, mixed into BatchDecoder (server/engine/batching.py). Any thread may call these:
they only read the vocabulary and the model's metadata, which llama.cpp never changes.
"""

from __future__ import annotations

import threading
from typing import Any

import llama_cpp.llama_cpp as lc
from llama_cpp import _internals

from server.engine.constraints.grammar import check_grammar
from server.engine.constraints.vocab_index import VocabIndex
from server.engine.decoder_types import DecoderConfig
from server.engine.tokens import tokenizing, vocabtext


class ModelFacts:
    cfg: DecoderConfig
    _model: _internals.LlamaModel
    _vocab: Any  # llama_vocab pointer
    _n_vocab: int
    _index: VocabIndex | None
    _index_lock: threading.Lock
    _specials: tokenizing.SpecialTexts | None

    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """llama.cpp's ids for `text`, in time linear in it (server/engine/tokens/tokenizing.py)."""
        data = text.encode("utf-8")
        if len(data) <= tokenizing.LONG:
            return tokenizing.tokenize_whole(self._vocab, data, add_bos, special)
        return tokenizing.tokenize(self._vocab, data, add_bos, special, self.special_texts())

    def special_texts(self) -> tokenizing.SpecialTexts:
        """Built once, on the first long text (any thread: it only reads the vocabulary)."""
        with self._index_lock:
            specials = getattr(self, "_specials", None)
            if specials is None:
                specials = self._specials = tokenizing.SpecialTexts(self._vocab)
            return specials

    def detokenize(self, tokens: list[int], special: bool = False) -> str:
        return str(self._model.detokenize(tokens, special).decode("utf-8", errors="replace"))

    def text_of(self, tokens: list[int]) -> str:
        """Tokens -> text as /detokenize gives it (server/engine/tokens/vocabtext.py); any thread."""
        return vocabtext.detokenize(self._vocab, tokens)

    def piece_of(self, token: int) -> bytes:
        return vocabtext.piece(self._vocab, token)

    def metadata(self) -> dict[str, str]:
        return dict(self._model.metadata())

    def chat_template(self) -> str | None:
        raw = lc.llama_model_chat_template(self._model.model, None)
        return str(raw.decode("utf-8")) if raw else None

    def check_grammar(self, gbnf: str) -> None:
        """grammar.GrammarError unless llama.cpp parses `gbnf` (any thread: the vocabulary is read-only).
        The first time, the vocabulary index constrained sampling needs is built here too, in
        the caller's thread, rather than in the middle of everyone's step."""
        check_grammar(self._vocab, gbnf)
        self.vocab_index()

    def vocab_index(self) -> VocabIndex:
        """Built once, on first need (any thread: it only reads the vocabulary)."""
        with self._index_lock:
            if self._index is None:
                self._index = VocabIndex(self._vocab, self._n_vocab)
            return self._index

    def token_text(self, token: int) -> str:
        return str(self._model.token_get_text(token))

    def token_attr(self, token: int) -> int:
        return int(self._model.token_get_attr(token))

    token_bos = property(lambda self: self._model.token_bos())
    token_eos = property(lambda self: self._model.token_eos())
    add_bos = property(lambda self: bool(self._model.add_bos_token()))
    n_ctx_train = property(lambda self: self._model.n_ctx_train())
    n_ctx = property(lambda self: self.cfg.n_ctx_per_seq, doc="the context one request gets")
    n_vocab = property(lambda self: self._n_vocab, doc="token ids are below this")
    n_slots = property(lambda self: self.cfg.n_parallel, doc="sequences decoded together")
