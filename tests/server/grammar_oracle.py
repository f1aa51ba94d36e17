"""Whether llama.cpp's grammar sampler accepts a whole text: the membership test for our grammars.

Loads only Gemma's vocabulary (no weights), tokenizes the text, and walks its tokens
through a real grammar sampler exactly as the decoder does: each token must be
allowed before it is accepted, and the end must be allowed after the last one.
"""

from __future__ import annotations

import llama_cpp.llama_cpp as lc
from llama_cpp import _internals

from server.engine.constraints.grammar import LlamaGrammar


class Oracle:
    def __init__(self, gguf) -> None:
        params = lc.llama_model_default_params()
        params.vocab_only = True
        self.model = _internals.LlamaModel(path_model=str(gguf), params=params, verbose=False)
        self.vocab, self.eos = self.model.vocab, self.model.token_eos()

    def accepts(self, gbnf: str, text: str) -> bool:
        grammar = LlamaGrammar(self.vocab, gbnf)
        try:
            for token in self.model.tokenize(text.encode("utf-8"), False, False):
                if not grammar.allows(token):
                    return False
                grammar.accept(token)
            return grammar.allows(self.eos)
        finally:
            grammar.free()

    def close(self) -> None:
        self.model.close()
