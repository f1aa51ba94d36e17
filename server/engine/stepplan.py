"""What one decode step feeds llama.cpp: each running sequence's rows, chosen before any is written.

Every decoding sequence gives its next token (and its draft); waiting prompts share `prefill_chunk`
tokens per step while others decode (the whole batch when none does). Rows go into the batch
by slot. No shape needs avoiding for the numbers' sake: with batch-invariant kernels
(server/engine/invariance.py) a row's logits do not depend on the rows beside it, and without
them nothing is promised.

One shape is avoided for speed. With a KV stream per slot, llama.cpp evaluates a batch in one
pass over the weights only when its sequences have consecutive ids and the same number of rows
(llama_batch_allocr::split_equal); otherwise it runs one pass per group. So when `equal_rows`
is set, every decoding sequence gets as many rows as the longest draft needs: the shorter ones
are padded with rows whose results are never read and whose KV cells are dropped after the step
(`Feed.pad`). On a GPU a pass costs the same for 1 row or 17, and the split cost a pass per group.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.engine.sequence import DECODING, PREFILL, Sequence
from server.engine.slots import Slot


@dataclass
class Feed:
    seq: Sequence
    pos: int  # position of the first row
    tokens: list[int]
    n_out: int  # the rows before the padding whose logits are wanted: 1 to sample a next token, more to verify a draft
    pad: int = 0  # rows after them that only give the step one shape: never read, their KV cells dropped

    @property
    def real(self) -> int:
        """The rows that are the sequence's own tokens (padding aside)."""
        return len(self.tokens) - self.pad

    @property
    def slot(self) -> Slot:
        assert self.seq.slot is not None  # only running sequences are fed
        return self.seq.slot


def plan(
    running: list[Sequence], n_batch: int, prefill_chunk: int, equal_rows: bool = False, n_ctx: int = 0
) -> list[Feed]:
    """This step's rows for `running` (Sequence objects), in slot order. A decoding sequence
    gives its next token and its draft, if it has one (server/engine/speculation/speculator.py);
    with `equal_rows`, padded to the longest (see the module docstring), never past the last
    cell of its context (`n_ctx` per sequence; such a step takes two passes instead)."""
    feeds = []
    for s in running:
        if s.state == DECODING:
            tokens = [s.next_token, *s.spec.draft] if s.spec is not None else [s.next_token]
            feeds.append(Feed(s, s.n_past, tokens, len(tokens)))
    width = max((len(f.tokens) for f in feeds), default=0)
    if equal_rows and width > 1:
        for f in feeds:
            room = n_ctx - 1 - (f.pos + len(f.tokens)) if n_ctx else width
            f.pad = max(min(width - len(f.tokens), room), 0)
            f.tokens += [f.tokens[-1]] * f.pad  # any token: its row is never read
    n = sum(len(f.tokens) for f in feeds)
    # While others decode, prompts get only `prefill_chunk` tokens per step so their streams
    # keep advancing; alone, they may fill the whole batch.
    budget = min(n_batch - n, prefill_chunk if n else n_batch)
    for seq in sorted((s for s in running if s.state == PREFILL), key=lambda s: s.id):
        k = min(budget, len(seq.prompt) - seq.n_past)
        if k <= 0:
            break
        end = seq.n_past + k
        feeds.append(Feed(seq, seq.n_past, seq.prompt[seq.n_past : end], int(end == len(seq.prompt))))
        budget -= k
    feeds.sort(key=lambda f: f.slot.id)
    return feeds
