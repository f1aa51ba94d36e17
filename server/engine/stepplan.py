"""What one decode step feeds llama.cpp: each running sequence's rows, chosen before any is written.

Every decoding sequence gives its next token (and its draft); waiting prompts share `prefill_chunk`
tokens per step while others decode (the whole batch when none does), at most
`max_rows` each. Rows go into the batch by slot, so the ubatches llama.cpp makes of
it hold runs of neighbouring slots (server/engine/invariance.py).

For batch-invariant decoding, `shape` then gives a sequence whose row would sit alone
in its ubatch far into its context one more row: the token before it, recomputed
(its KV cell is dropped and written again, with the same bits).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engine import invariance
from server.engine.sequence import DECODING, PREFILL, Sequence
from server.engine.slots import Slot


@dataclass
class Feed:
    seq: Sequence
    pos: int  # position of the first row
    tokens: list[int]
    n_out: int  # the last rows whose logits are wanted: 1 to sample a next token, more to verify a draft

    @property
    def slot(self) -> Slot:
        assert self.seq.slot is not None  # only running sequences are fed
        return self.seq.slot


def plan(running: list[Sequence], n_batch: int, prefill_chunk: int, max_rows: int) -> list[Feed]:
    """This step's rows for `running` (Sequence objects), in slot order. A decoding sequence
    gives its next token and its draft, if it has one (server/engine/speculation/speculator.py)."""
    feeds = []
    for s in running:
        if s.state == DECODING:
            tokens = [s.next_token, *s.spec.draft] if s.spec is not None else [s.next_token]
            feeds.append(Feed(s, s.n_past, tokens, len(tokens)))
    n = sum(len(f.tokens) for f in feeds)
    # While others decode, prompts get only `prefill_chunk` tokens per step so their streams
    # keep advancing; alone, they may fill the whole batch.
    budget = min(n_batch - n, prefill_chunk if n else n_batch)
    for seq in sorted((s for s in running if s.state == PREFILL), key=lambda s: s.id):
        k = min(budget, len(seq.prompt) - seq.n_past, max_rows)
        if k <= 0:
            break
        end = seq.n_past + k
        feeds.append(Feed(seq, seq.n_past, seq.prompt[seq.n_past : end], int(end == len(seq.prompt))))
        budget -= k
    feeds.sort(key=lambda f: f.slot.id)
    return feeds


def shape(feeds: list[Feed], n_ubatch: int, max_rows: int) -> None:
    """Give every row that would be alone in its ubatch at a far position a neighbour from its
    own sequence: the token before its first row (or, for a sequence already at `max_rows`,
    one row less, so the ubatch before takes all of it). Changes `feeds` in place."""
    by_slot = {f.slot.id: f for f in feeds}
    for _ in range(4 * len(feeds)):
        seqs = [f.slot.id for f in feeds for _ in f.tokens]
        positions = [f.pos + j for f in feeds for j in range(len(f.tokens))]
        lone = invariance.lone_rows(seqs, positions, n_ubatch)
        if not lone:
            return
        f = by_slot[lone[0]]
        if len(f.tokens) < max_rows:
            f.pos -= 1
            f.tokens.insert(0, f.slot.cached[f.pos])
        else:  # only a prompt chunk is this long: it has no draft
            f.tokens.pop()
            f.n_out = 0
