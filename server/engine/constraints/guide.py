"""Drafts under a grammar: cut where the grammar refuses, and go on with the text it forces.

A constrained sequence's draft (server/engine/speculation/) is tried on a copy of its grammar
before the rows are spent on it: a drafted token the grammar refuses could never be the
sampled one, so the draft ends before it. Where the draft ends, the grammar often leaves
only one way to go on (a JSON Schema's next key: `email": ` after `"`), which prompt lookup
cannot guess, since each key appears once in the answer; those bytes are found one at a
time (the one-byte tokens the grammar allows: exactly one), tokenized, and drafted, less
their last token (the model may write it merged with what follows). Verification keeps
only what the model itself samples, so a wrong guess costs a row, never the text.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from server.engine.constraints.grammar import Constraint
from server.engine.constraints.sampler import ConstrainedSampler

FORCED_BYTES = 48  # most bytes of forced text looked for at once


def guide(
    sampler: ConstrainedSampler, draft: list[int], n_max: int, tokenize: Callable[[bytes], list[int]]
) -> list[int]:
    """`draft` cut before the first token the grammar refuses, then extended with the tokens of
    the text the grammar forces from there; at most `n_max` tokens."""
    grammar = sampler.grammar.clone()
    try:
        kept = _allowed_prefix(sampler, grammar, draft[:n_max])
        if len(kept) < n_max and (not kept or sampler.piece(kept[-1]) is not None):
            forced = _forced_bytes(sampler, grammar)
            kept += tokenize(forced)[:-1][: n_max - len(kept)] if forced else []
        return kept
    finally:
        grammar.free()


def _allowed_prefix(sampler: ConstrainedSampler, grammar: Constraint, draft: list[int]) -> list[int]:
    kept: list[int] = []
    for token in draft:
        if not grammar.allows(token) or (sampler.piece(token) is not None and sampler.index.textless[token]):
            break
        kept.append(token)
        if sampler.piece(token) is None:  # end of generation, which the grammar allows: nothing follows
            break
        grammar.accept(token)
    return kept


def _forced_bytes(sampler: ConstrainedSampler, grammar: Constraint) -> bytes:
    """The bytes that must come next, up to the first place where the grammar allows two
    (or may end); b"" when that is the very next byte."""
    index, cand = sampler.index, sampler.candidates
    if index.untestable:  # a byte without a one-byte token: which bytes are allowed cannot be told
        return b""
    out = bytearray()
    while len(out) < FORCED_BYTES and not grammar.allows(sampler.eog):
        cand.fill(index.single_ids, np.zeros(len(index.single_ids), dtype=np.float32))
        grammar.mask(cand)
        allowed = np.flatnonzero(np.isfinite(cand.logits))
        if len(allowed) != 1:
            break
        out.append(int(index.single_bytes[allowed[0]]))
        grammar.accept(int(index.single_ids[allowed[0]]))
    return bytes(out)
