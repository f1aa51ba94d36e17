"""Sampling one sequence under a grammar: llama.cpp's reject-then-mask, cheap on a large vocabulary.

As llama.cpp's common sampler does: sample as if unconstrained, ask the grammar about
that one token, and only when it is rejected mask the candidates and sample again.
Masking the whole vocabulary costs about 100 ms for Gemma's 262k tokens (the grammar
decodes every piece), so the mask is first applied to the best 64 candidates by
logit, then the best 4096, and when neither holds what the draw needs, to the tokens
that start with a byte the grammar allows there (server/engine/constraints/vocab_index.py: every
allowed token is among them). That is exact, not an approximation: an allowed token
outside the best N has a lower logit than every token inside, so greedy picks the
same token, a top-k draw too once the subset holds k allowed tokens, and so does a
draw whose min-p would drop every token outside (their logits are all below the
best allowed one's plus ln(min_p)); top-p is applied before min-p in the chain, so
with both on, the last case may move top-p's cut by tokens that min-p then drops.
Tokens without text (control tokens) are never drawn: the answer could not show them.

Two rules llama.cpp's sampler leaves to its caller:
  - the answer ends when the grammar is complete and the model's choice does not
    fit it (an end-of-generation token is allowed only when complete);
  - a run of whitespace longer than WHITESPACE_RUN characters is cut: whitespace-only
    tokens are then rejected like tokens the grammar forbids (a user's `ws ::= [ \\n]*`
    must not let a small model spend its whole budget on blank lines).
A token is accepted into the grammar only after the grammar allowed it: llama.cpp
aborts the process on one it forbids.
"""

from __future__ import annotations

from typing import Callable

import llama_cpp.llama_cpp as lc
import numpy as np

from server.engine.constraints.grammar import Candidates, Constraint
from server.engine.constraints.vocab_index import VocabIndex
from server.engine.request import SamplingParams
from server.engine.sampling import apply_bias, bias_entries, draw_chain, penalize

WHITESPACE_RUN = 32
SUBSETS = (64, 4096)
_BLANK = frozenset(b" \t\n\r")


class GrammarStuck(Exception):
    """No token fits the grammar (and it is not complete): the answer cannot go on."""


class ConstrainedSampler:
    """One sequence's grammar, draw stages and whitespace count; used on the stepping thread only."""

    def __init__(
        self,
        grammar: Constraint,
        params: SamplingParams,
        n_vocab: int,
        eog: int,
        piece: Callable[[int], bytes | None],
        candidates: Candidates,
        index: VocabIndex,
    ) -> None:
        self.grammar, self.params, self.n_vocab, self.eog, self.piece = grammar, params, n_vocab, eog, piece
        self.index = index
        self._bias = bias_entries(params)
        self._chain = None if params.temperature <= 0 else draw_chain(params)
        self._candidates = candidates  # shared by the decoder's sequences: one step samples one at a time
        self._blank_run = 0

    def sample(self, logits: np.ndarray, recent: list[int]) -> int:
        """The next token from this sequence's row of logits (changed in place); `eog` when the
        grammar is complete and the model's choice does not fit; GrammarStuck when nothing fits."""
        apply_bias(logits, self._bias)
        penalize(logits, recent, self.params)
        token = self._draw_all(logits) if self._chain else int(logits.argmax())
        if self._fits(token):
            return token
        if self.grammar.allows(self.eog):  # complete: end rather than force a continuation
            return self.eog
        token = self._masked(logits)
        if not self._fits(token):  # the mask said it fits; never accept on anything less than `allows`
            raise GrammarStuck(f"token {token} was drawn from the mask but the grammar refuses it")
        return token

    def accept(self, token: int) -> None:
        piece = self.piece(token) or b""
        self.grammar.accept(token)
        if piece and set(piece) <= _BLANK:
            self._blank_run += len(piece)
        else:
            self._blank_run = len(piece) - len(piece.rstrip(b" \t\n\r"))

    @property
    def candidates(self) -> Candidates:
        """The decoder's shared candidate array (stepping thread only)."""
        return self._candidates

    def free(self) -> None:
        self.grammar.free()
        if self._chain:
            lc.llama_sampler_free(self._chain)
            self._chain = None

    # --- internals ------------------------------------------------------------------
    def _fits(self, token: int) -> bool:
        if self.piece(token) is not None:  # not end-of-generation: that one only needs the grammar
            if self.index.textless[token] or (self._blank_run >= WHITESPACE_RUN and self.index.blank[token]):
                return False
        return self.grammar.allows(token)

    def _draw_all(self, logits: np.ndarray) -> int:
        cand = self._candidates
        cand.fill(cand.every_id, logits)
        lc.llama_sampler_apply(self._chain, cand.pointer)
        return cand.selected()

    def _masked(self, logits: np.ndarray) -> int:
        """The draw over the tokens the grammar allows, trying the best-logit subsets first."""
        cand, best = self._candidates, np.argpartition(logits, -SUBSETS[-1])[-SUBSETS[-1] :]
        for size in SUBSETS:
            ids = best if size == SUBSETS[-1] else best[np.argpartition(logits[best], -size)[-size:]]
            cand.fill(ids, logits[ids])
            floor = float(cand.logits.min())  # every token outside the subset has at most this logit
            allowed = self._mask(cand)
            if allowed and self._enough(allowed, cand, floor):
                return self._draw(cand)
        # Every allowed token starts with a byte whose one-byte token the grammar allows.
        singles = self.index.single_ids
        cand.fill(singles, logits[singles])
        self.grammar.mask(cand)
        ids = self.index.starting_with(self.index.single_bytes[np.isfinite(cand.logits)])
        cand.fill(ids, logits[ids])
        if self._mask(cand):
            return self._draw(cand)
        raise GrammarStuck("no token of the vocabulary fits the grammar")

    def _mask(self, cand: Candidates) -> int:
        """Mask what the grammar forbids and what may not be drawn; returns how many are left."""
        cand.logits[self.index.textless[cand.ids]] = -np.inf
        if self._blank_run >= WHITESPACE_RUN:
            cand.logits[self.index.blank[cand.ids]] = -np.inf
        self.grammar.mask(cand)
        return int(np.isfinite(cand.logits).sum())

    def _enough(self, allowed: int, cand: Candidates, floor: float) -> bool:
        """Whether a draw over this subset's allowed tokens is the draw over all allowed tokens:
        greedy needs one (the best allowed token is inside); top-k needs k; and no token outside
        could pass min-p (they are all below the best allowed logit + ln(min_p))."""
        p = self.params
        if self._chain is None or (p.top_k > 0 and allowed >= p.top_k):
            return True
        return p.min_p > 0 and floor < float(cand.logits.max()) + float(np.log(p.min_p))

    def _draw(self, cand: Candidates) -> int:
        if self._chain is None:
            return int(cand.ids[int(np.argmax(cand.logits))])
        lc.llama_sampler_apply(self._chain, cand.pointer)
        return cand.selected()
