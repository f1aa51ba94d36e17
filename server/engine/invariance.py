"""Batch-invariant decoding on the CPU: a token's logits never depend on what shares its llama_decode.

llama.cpp's CPU backend picks kernels by batch shape, and two kernels add a row's terms in
different orders, so the same token can get logits that differ in the last bits, and a greedy
near-tie flips ("Why" / "why"). What the pinned llama.cpp does (read in its source and probed; the
end-to-end property is tested in tests/server/test_invariance.py):

- Weights repacked at load ("extra buffer types": Q4_K, Q6_K, Q4_0... on AVX2 and up) are
  multiplied four rows at a time by one kernel and the remaining rows by another, so a row's
  result depends on its place in the ubatch. -> Not repacked (`model_params`).
- Unrepacked K-quant weights take a tiled kernel from 8 rows up and a dot product below.
  -> Tiled matmul off for the process (`configure_process`, `prepare`); the dot product serves
  every size.
- Flash attention runs each query row through the same loop over the KV cells, except when
  one sequence has 64 or more rows in a ubatch (a tiled f32 GEMM) or when a single row is
  alone in its ubatch and the KV view has 512 or more cells (the cells are split across
  threads and the partial sums merged). -> At most `MAX_ROWS` rows of one sequence per
  decode, and a row that would be alone in its ubatch with that many cells gets its
  predecessor recomputed beside it (`lone_rows` says which; the decoder does it).

What does not depend on the batch: everything else is computed row by row (norms, RoPE,
activations, the quantization of activations); the llamafile GEMM that multiplies Q8_0,
Q5_0 and Q4_0 weights from two rows up gives the same bits as the dot product used for one
row; and a KV cell's contents do not depend on the batch that wrote them, so cells kept for
prefix reuse or copied back from the RAM prompt cache equal freshly computed ones (each
sequence has its own KV stream, filled in position order, so attention visits its cells in
the same order).

Not covered: GPU backends (their own kernel choices), flash attention off (its KQ product
takes the llamafile GEMM from two rows and a dot product for one), and f16/f32 weight
matrices (the same GEMM and dot product disagree there). BATCH_INVARIANT=off leaves every
kernel choice to llama.cpp again.
"""

from __future__ import annotations

import os
from typing import Any

from server.engine.decoder_types import DecoderConfig

# ggml-cpu's flash attention switches to its tiled path at this many query rows of one sequence.
FA_TILE_ROWS = 64
MAX_ROWS = FA_TILE_ROWS - 1
# A lone query row is split across threads when the KV view has >= 512 cells; the view is the
# sequence's cells padded to 256, so that happens once a row's position reaches 256.
LONE_ROW_MIN_POS = 256


def applies(cfg: DecoderConfig) -> bool:
    """Whether a decoder with DecoderConfig `cfg` shapes its batches for invariance: asked for,
    and on the CPU (with layers on a GPU, the GPU's kernels decide)."""
    return bool(cfg.batch_invariant) and cfg.n_gpu_layers == 0


TILED_MM = "GGML_CPU_TILED_MM"
_OWN_TILED_MM = TILED_MM not in os.environ  # an explicit setting is the operator's, never changed here


def configure_process() -> None:
    """Turn ggml-cpu's tiled K-quant matmul off. ggml reads the variable once, when the process
    creates its first context; so this runs when the decoder module is imported, before any
    llama.cpp context exists (a test session may make several), and `prepare` undoes it for
    a server started with BATCH_INVARIANT=off."""
    if _OWN_TILED_MM:
        os.environ[TILED_MM] = "0"


def prepare(cfg: DecoderConfig) -> None:
    """Before the decoder's context is created: the kernel setting its config asks for."""
    if _OWN_TILED_MM:
        if applies(cfg):
            os.environ[TILED_MM] = "0"
        else:
            os.environ.pop(TILED_MM, None)


def model_params(mparams: Any) -> None:
    """Keep the weights as stored: no repacking into the row-grouped CPU layouts."""
    mparams.use_extra_bufts = False


def ubatches(seq_of_row: list[int], n_ubatch: int) -> list[dict[int, list[int]]]:
    """The ubatches llama_decode splits a batch into when each sequence has its own KV stream:
    llama_batch_allocr::split_equal(n_ubatch, sequential=true). `seq_of_row[i]` is row i's
    sequence id; each ubatch maps its sequences to their row indices (the same count each).

    A ubatch takes sequences with consecutive ids, in the order they first appear among the
    unused rows, and then the same number of rows from each while all have rows left.
    """
    rows: dict[int, list[int]] = {}
    for i, s in enumerate(seq_of_row):
        rows.setdefault(s, []).append(i)
    used = [False] * len(seq_of_row)
    nxt = {s: 0 for s in rows}
    out: list[dict[int, list[int]]] = []
    while not all(used):
        chosen: list[int] = []
        for i, s in enumerate(seq_of_row):
            if used[i] or s in chosen or (chosen and s != chosen[-1] + 1):
                continue
            chosen.append(s)
            if len(chosen) > n_ubatch:
                break
        taken: dict[int, list[int]] = {s: [] for s in chosen}
        while all(nxt[s] < len(rows[s]) for s in chosen):
            for s in chosen:
                i = rows[s][nxt[s]]
                used[i] = True
                nxt[s] += 1
                taken[s].append(i)
            if (len(taken[chosen[0]]) + 1) * len(chosen) > n_ubatch:
                break
        out.append(taken)
    return out


def lone_rows(seq_of_row: list[int], pos_of_row: list[int], n_ubatch: int) -> list[int]:
    """Sequences with a row that would sit alone in its ubatch at a position where flash
    attention splits the KV cells across threads."""
    return [
        s
        for ub in ubatches(seq_of_row, n_ubatch)
        if len(ub) == 1
        for s, idx in ub.items()
        if len(idx) == 1 and pos_of_row[idx[0]] >= LONE_ROW_MIN_POS
    ]
