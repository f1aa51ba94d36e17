"""Where each sequence of an embedding batch goes, so that its vector never depends on its neighbours.

Pure arithmetic over token counts (no llama.cpp), used by the Embedder (embedder.py). On the
CPU, what a sequence's rows compute depends on the batch only through flash attention, and
ggml-cpu has two attention kernels (ops.cpp, read for the pinned llama.cpp and tested in
tests/server/test_embedding_layout.py and test_embedding_engine.py):

- fewer than FA_TILE_ROWS (64) rows in the batch: each query row walks the cells it may see
  in cell order and skips every other sequence's with no arithmetic: nothing about the
  neighbours matters. Cheap for short sequences, quadratic per sequence (~90 ns per
  query-key pair and head here), so slow from about 40 tokens up.
- 64 rows or more: a tiled kernel. Query rows are independent (zero-padded tiles, per-row
  GEMM), but keys are walked in tiles of KV_TILE (64) cells counted from cell 0, with an
  online softmax per tile, and each tile's softmax sum adds SIMD groups of up to LANES (16)
  cells, each group reduced as a tree. Cells of other sequences add exact zeros. So a row's
  result depends on how its own sequence's cells fall into tiles and lanes: the same when
  the sequence starts at the same place modulo 16 and does not cross a tile boundary (a
  sequence of at most 64 tokens), or starts at the same place modulo 64 (a longer one).

Each sequence therefore has one canonical way to be computed, a function of its tokens alone
(`Shape`): "small" (at most SMALL_MAX tokens: only in batches of fewer than 64 rows, where
the first kernel runs) or "tiled", with a phase: the row, modulo 16, where it starts. Some
tiled sequences start on a 16-row boundary, others end on one (`shape`), so the short tail
group of one and the short head group of the next can share 16 rows. Alone, a tiled
sequence is computed at its phase in a batch of at least 64 rows, filler rows around it; in
a batch, `place` puts it where it computes exactly that, and filler rows fill the gaps.
Batches of tiled sequences stop at TILED_ROWS: ggml's tiled kernel scans the mask of every
key tile for every query tile, so a row costs more in larger batches (measured: 0.43 ms of
CPU per row at 512 rows, 0.35 at 256, MiniLM f16 on 2 threads).

Why a phase at all: a sequence that may not cross a 64-row tile leaves the tile's end empty
unless a short one fits there; about 10% of the rows of a batch of 8-70-token texts are
filler. Not covered, as for generation (server/engine/invariance.py): GPU backends, and
SIMD groups wider than 16 floats (none on x86).
"""

from __future__ import annotations

import zlib
from array import array
from dataclasses import dataclass
from typing import Generic, Sequence, TypeVar

from server.engine.invariance import FA_TILE_ROWS

KV_TILE = 64  # GGML_FA_TILE_KV: the tiled kernel's key tile, counted from cell 0
LANES = 16  # the widest SIMD group the tiled kernel's softmax sums at once (AVX-512: 16 floats)
SMALL_MAX = 16  # sequences of at most this many tokens take the per-row kernel (batches < 64 rows)
SMALL_ROWS = FA_TILE_ROWS - 1  # the most rows of a batch of small sequences
TILED_ROWS = 256  # a batch of tiled sequences stops here (a longer sequence goes alone)
PER_JOB = 64  # inputs of one job considered for a batch: bounds the packer's work per batch


@dataclass(frozen=True)
class Shape:
    """How a sequence is computed: its kernel and the row (mod 16, or mod 64 past 64 tokens) it starts at."""

    small: bool
    phase: int


def shape(tokens: Sequence[int]) -> Shape:
    """The canonical shape of a sequence: a function of its tokens only. A tiled sequence whose
    last 16-row group would hold fewer than 8 tokens starts on a 16-row boundary; one whose
    last group would hold more ends on one instead (its first group is the short one); at 8,
    a hash of the tokens decides. So the short tail of one sequence and the short head of the
    next often make up one group between them."""
    n = len(tokens)
    if n <= SMALL_MAX:
        return Shape(True, 0)
    tail = n % LANES
    ends = tail > LANES // 2 or (tail == LANES // 2 and zlib.crc32(array("i", tokens).tobytes()) % 2 == 1)
    return Shape(False, LANES - tail if ends else 0)


def place(cursor: int, n: int, phase: int) -> int:
    """The first row at or after `cursor` where a tiled sequence of `n` tokens with `phase`
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
    candidates: Sequence[Candidate[K]], small: bool, max_sequences: int, exact: bool = True, cap: int | None = None
) -> list[tuple[Candidate[K], int]]:
    """(candidate, first row) for one batch of `small` or tiled sequences. The first candidate
    always goes in (the caller puts the input that waited longest first); then, while room is
    left, the candidate that fits closest after the last one (the longest on a tie), so gaps
    stay small. `exact` False (BATCH_INVARIANT=off): sequences back to back, any shape."""
    limit = cap if cap is not None else SMALL_ROWS if small else TILED_ROWS
    seats: list[tuple[Candidate[K], int]] = []
    cursor, left = 0, list(candidates)
    while left and len(seats) < max_sequences:
        best: tuple[int, int, int] | None = None  # (gap, -length, index)
        for i, c in enumerate(left):
            n = len(c.tokens)
            start = place(cursor, n, c.shape.phase) if exact and not small else cursor
            if seats and start + n > limit:
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


def rows_needed(spans: Sequence[tuple[int, int]], min_rows: int, filler: bool) -> int:
    """The row count of a batch of sequences at (first row, length) `spans`: past the last one
    and at least `min_rows` (one key tile for tiled sequences, so the tiled kernel runs), plus
    a filler row where `filler` asks for one and no row is left over for it."""
    rows = max(max(start + n for start, n in spans), min_rows)
    return rows + 1 if filler and rows == sum(n for _, n in spans) else rows
