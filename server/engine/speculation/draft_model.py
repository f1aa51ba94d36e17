"""A draft model as a draft source: a small GGUF with the target's vocabulary guesses ahead.

One model and one context, loaded once and shared by every slot: sequence id i of
the draft context shadows slot i of the target. Before drafting, a sequence's
draft KV cache is brought in line with the target's history (the shared prefix
is kept, the rest removed and the missing tokens decoded in one batch), then
`n_max` tokens are decoded greedily, one llama_decode each. The drafted tokens
stay in the draft cache; the next call trims whatever the target rejected.
Stepping thread only, like the decoder that calls it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import llama_cpp.llama_cpp as lc
import numpy as np
from llama_cpp import _internals, _logger

from server.engine.promptcache import common_prefix


class DraftModelError(ValueError):
    """The draft model cannot serve this target (another vocabulary) or failed to load."""


class DraftModel:
    def __init__(
        self,
        path: str | Path,
        n_slots: int,
        n_ctx: int,
        n_gpu_layers: int = 0,
        n_threads: int = 2,
        target_vocab: tuple[int, int, int] | None = None,
    ) -> None:
        """`target_vocab`: (n_vocab, bos, eos) of the served model, which the draft must share."""
        _logger.set_verbose(False)
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = n_gpu_layers
        self._model = _internals.LlamaModel(path_model=str(path), params=mparams, verbose=False)
        facts = (self._model.n_vocab(), self._model.token_bos(), self._model.token_eos())
        if target_vocab is not None and facts != target_vocab:
            self._model.close()
            raise DraftModelError(
                f"the draft model {path} has another vocabulary (n_vocab, bos, eos = {facts}, "
                f"the served model has {target_vocab})"
            )
        cparams = lc.llama_context_default_params()
        cparams.n_ctx, cparams.n_seq_max, cparams.n_batch = n_slots * n_ctx, n_slots, n_ctx
        cparams.n_threads = cparams.n_threads_batch = n_threads
        self._ctx = _internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._mem = lc.llama_get_memory(self._ctx.ctx)
        self._batch = _internals.LlamaBatch(n_tokens=n_ctx, embd=0, n_seq_max=1, verbose=False)
        self._n_vocab, self._n_ctx = facts[0], n_ctx
        self._cached: list[list[int]] = [[] for _ in range(n_slots)]

    def begin(self, key: int, prompt: Sequence[int]) -> None:
        pass  # the cache of slot `key` is synced lazily, at its first draft

    def end(self, key: int) -> None:
        pass  # kept: the slot's next request may share a prefix

    def kind(self, key: int, history: Sequence[int]) -> int:
        return 1  # one kind of guess: the draft model's greedy continuation

    def kind_name(self, kind: int) -> str:
        return "draft-model"

    def draft(self, key: int, history: Sequence[int], n_max: int) -> list[int]:
        if n_max <= 0:
            return []
        if not self._sync(key, history):
            return []
        out: list[int] = []
        for _ in range(n_max):
            logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(self._ctx.ctx, -1), shape=(self._n_vocab,))
            token = int(logits.argmax())
            if lc.llama_vocab_is_eog(self._model.vocab, token):
                break
            out.append(token)
            if len(out) == n_max or not self._decode(key, [token], len(self._cached[key])):
                break
        return out

    def _sync(self, key: int, history: Sequence[int]) -> bool:
        """Make sequence `key` hold exactly `history` with the last token's logits ready."""
        cached = self._cached[key]
        keep = min(common_prefix(cached, history), len(history) - 1)  # the last token is always decoded
        if not lc.llama_memory_seq_rm(self._mem, key, keep, -1):
            lc.llama_memory_seq_rm(self._mem, key, -1, -1)
            keep = 0
        del cached[keep:]
        return self._decode(key, list(history[keep:]), keep)

    def _decode(self, key: int, tokens: list[int], n_past: int) -> bool:
        if n_past + len(tokens) > self._n_ctx or not tokens:
            return False  # longer than the draft context: no draft for this one
        b = self._batch.batch
        b.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, n_past + i, 1, i == len(tokens) - 1
            b.seq_id[i][0] = key
        if lc.llama_decode(self._ctx.ctx, b) != 0:
            lc.llama_memory_seq_rm(self._mem, key, -1, -1)
            self._cached[key].clear()
            return False
        self._cached[key].extend(tokens)
        return True

    def close(self) -> None:
        self._batch.close()
        self._ctx.close()
        self._model.close()
