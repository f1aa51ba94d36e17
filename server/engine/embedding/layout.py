"""Where each sequence of an embedding batch goes, so that its vector never depends on its neighbours.

Pure arithmetic over token counts (no llama.cpp), used by the Embedder (embedder.py). On the
CPU, what a sequence's rows compute depends on the batch only through flash attention. The
Embedder computes every batch with the batch-invariant attention of deploy/llama-patches/0001
(server/engine/invariance.py): every query row takes ggml's tiled kernel, whatever the batch's
row count; each score is one FMA chain of its own row; a tile's softmax weights are summed in
lanes counted from the row's first nonzero weight; and the weights of other sequences' cells
are exact zeros, which add nothing. What is left that depends on the place: keys are walked in
tiles of KV_TILE (64) cells counted from cell 0 of the batch's one KV stream, with an online
softmax per tile, so a row's result depends on how its own sequence's cells fall into tiles.
(Read for the pinned llama.cpp's ops.cpp; tested in tests/server/test_embedding_layout.py and
test_embedding_engine.py.)

So a sequence of at most 64 tokens computes the same anywhere within one key tile, and a
longer one wherever it starts on a tile boundary: alone, every sequence starts at row 0 of its
own batch. `place` puts each sequence at the first such row; the packer fills a tile's end
with the longest sequence that fits there, and filler rows (a sequence of their own, which
nobody attends to) fill what is left: about 3% of the rows of batches of 8-70-token texts.
Batches stop at TILED_ROWS (measured here: the CPU time per row does not grow from 256 to 512
rows, and fewer batches cost less thread synchronization). Not covered, as for generation:
GPU backends.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

KV_TILE = 64  # GGML_FA_TILE_KV: the tiled kernel's key tile, counted from cell 0
TILED_ROWS = 512  # a batch stops here (a longer sequence goes alone)
PER_JOB = 64  # inputs of one job considered for a batch: bounds the packer's work per batch


def place(cursor: int, n: int) -> int:
    """The first row at or after `cursor` where a sequence of `n` tokens computes exactly as it
    does alone (at row 0 of its own batch): within one key tile, or on a tile boundary past 64."""
    if n > KV_TILE:
        return -(-cursor // KV_TILE) * KV_TILE
    if cursor % KV_TILE + n > KV_TILE:  # it would cross a key tile: the next one
        return (cursor // KV_TILE + 1) * KV_TILE
    return cursor


K = TypeVar("K")


@dataclass(frozen=True)
class Candidate(Generic[K]):
    key: K  # the caller's name for this input
    tokens: Sequence[int]


def pack(
    candidates: Sequence[Candidate[K]], max_sequences: int, exact: bool = True, cap: int = TILED_ROWS
) -> list[tuple[Candidate[K], int]]:
    """(candidate, first row) for one batch of at most `cap` rows. The first candidate
    always goes in (the caller puts the input that waited longest first); then, while room is
    left, the candidate that fits closest after the last one (the longest on a tie), so gaps
    stay small. `exact` False (BATCH_INVARIANT=off): sequences back to back."""
    seats: list[tuple[Candidate[K], int]] = []
    cursor, left = 0, list(candidates)
    while left and len(seats) < max_sequences:
        best: tuple[int, int, int] | None = None  # (gap, -length, index)
        for i, c in enumerate(left):
            n = len(c.tokens)
            start = place(cursor, n) if exact else cursor
            if seats and start + n > cap:
                continue
            key = (start - cursor, -n, i)
            if best is None or key < best:
                best = key
            if not seats:
                break  # the first one is not chosen, it is given
        if best is None:
            break
        chosen = left.pop(best[2])
        start = cursor + best[0]
        seats.append((chosen, start))
        cursor = start + len(chosen.tokens)
    return seats


def rows_needed(spans: Sequence[tuple[int, int]], filler: bool) -> int:
    """The row count of a batch of sequences at (first row, length) `spans`: past the last one,
    plus a filler row where `filler` asks for one and no row is left over for it."""
    rows = max(start + n for start, n in spans)
    return rows + 1 if filler and rows == sum(n for _, n in spans) else rows
