"""Where each sequence of an embedding batch goes, so that its vector never depends on its neighbours.

Pure arithmetic over token counts (no llama.cpp), used by the Embedder (embedder.py). On the
CPU, what a sequence's rows compute depends on the batch only through flash attention. The
Embedder computes every batch with the batch-invariant attention of deploy/llama-patches/0001
(server/engine/invariance.py): every query row takes ggml's tiled kernel, whatever the batch's
row count, and each score is one FMA chain of its own row. Query rows are then independent,
but keys are walked in tiles of KV_TILE (64) cells counted from cell 0 of the batch's one KV
stream, with an online softmax per tile, and each tile's softmax sum adds SIMD groups of up to
LANES (16) cells, each group reduced as a tree; cells of other sequences add exact zeros. So a
row's result depends on how its own sequence's cells fall into tiles and lanes: the same when
the sequence starts at the same place modulo 16 and does not cross a tile boundary (a sequence
of at most 64 tokens), or starts at the same place modulo 64 (a longer one). (Read for the
pinned llama.cpp's ops.cpp; tested in tests/server/test_embedding_layout.py and
test_embedding_engine.py.)

Each sequence therefore has one canonical way to be computed, a function of its tokens alone
(`Shape`): its phase, the row, modulo 16, where it starts. Some sequences start on a 16-row
boundary, others end on one (`shape`), so the short tail group of one and the short head group
of the next can share 16 rows. Alone, a sequence is computed at its phase in its own batch
(at most 15 filler rows before it); in a batch, `place` puts it where it computes exactly
that, and filler rows (a sequence of their own, which nobody attends to) fill the gaps.
Batches stop at TILED_ROWS: ggml's tiled kernel scans the mask of every key tile for every
query tile, so a row costs more in larger batches (measured: 0.43 ms of CPU per row at 512
rows, 0.35 at 256, MiniLM f16 on 2 threads).

Why a phase at all: a sequence that may not cross a 64-row tile leaves the tile's end empty
unless a short one fits there; about 10% of the rows of a batch of 8-70-token texts are
filler. Before the patched attention, short sequences needed batches of under 64 rows (ggml's
per-row kernel) and longer ones at least 64 (its tiled kernel), so a lone 30-token text cost 64
rows; now it costs its own rows and its phase. Not covered, as for generation: GPU backends,
and SIMD groups wider than 16 floats (none on x86).
"""

from __future__ import annotations

import zlib
from array import array
from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

KV_TILE = 64  # GGML_FA_TILE_KV: the tiled kernel's key tile, counted from cell 0
LANES = 16  # the widest SIMD group the tiled kernel's softmax sums at once (AVX-512: 16 floats)
TILED_ROWS = 256  # a batch stops here (a longer sequence goes alone)
PER_JOB = 64  # inputs of one job considered for a batch: bounds the packer's work per batch


@dataclass(frozen=True)
class Shape:
    """How a sequence is computed: the row (mod 16, or mod 64 past 64 tokens) it starts at."""

    phase: int


def shape(tokens: Sequence[int]) -> Shape:
    """The canonical shape of a sequence: a function of its tokens only. A sequence whose
    last 16-row group would hold fewer than 8 tokens starts on a 16-row boundary; one whose
    last group would hold more ends on one instead (its first group is the short one); at 8,
    a hash of the tokens decides. So the short tail of one sequence and the short head of the
    next often make up one group between them."""
    tail = len(tokens) % LANES
    ends = tail > LANES // 2 or (tail == LANES // 2 and zlib.crc32(array("i", tokens).tobytes()) % 2 == 1)
    return Shape(LANES - tail if ends else 0)


def place(cursor: int, n: int, phase: int) -> int:
    """The first row at or after `cursor` where a sequence of `n` tokens with `phase`
    computes exactly as it does alone (at row `phase` of its own batch)."""
    step = KV_TILE if n > KV_TILE else LANES
    start = cursor + (phase - cursor) % step
    if n <= KV_TILE and start % KV_TILE + n > KV_TILE:  # it would cross a key tile: the next one
        start = (start // KV_TILE + 1) * KV_TILE + phase
    return start


K = TypeVar("K")


@dataclass(frozen=True)
class Candidate(Generic[K]):
    key: K  # the caller's name for this input
    tokens: Sequence[int]
    shape: Shape


def pack(
    candidates: Sequence[Candidate[K]], max_sequences: int, exact: bool = True, cap: int = TILED_ROWS
) -> list[tuple[Candidate[K], int]]:
    """(candidate, first row) for one batch of at most `cap` rows. The first candidate
    always goes in (the caller puts the input that waited longest first); then, while room is
    left, the candidate that fits closest after the last one (the longest on a tie), so gaps
    stay small. `exact` False (BATCH_INVARIANT=off): sequences back to back, any shape."""
    seats: list[tuple[Candidate[K], int]] = []
    cursor, left = 0, list(candidates)
    while left and len(seats) < max_sequences:
        best: tuple[int, int, int] | None = None  # (gap, -length, index)
        for i, c in enumerate(left):
            n = len(c.tokens)
            start = place(cursor, n, c.shape.phase) if exact else cursor
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
