"""Batch-invariant decoding on the CPU: a token's logits never depend on what shares its llama_decode.

llama.cpp's CPU backend picks kernels by batch shape, and two kernels add a row's terms in
different orders, so the same token can get logits that differ in the last bits, and a greedy
near-tie flips ("Why" / "why"). What the pinned llama.cpp does (read in its source and probed; the
end-to-end property is tested in tests/server/test_invariance.py), and what is done about it:

- Weights repacked at load ("extra buffer types": Q4_0, Q4_K, Q2_K, IQ4_NL, MXFP4 on x86 with
  AVX2 and up) are multiplied four rows at a time by a gemm kernel and the remaining 1-3 rows by
  a gemv kernel; upstream, Q4_K's and Q2_K's gemv add a row's terms in another order than their
  gemm, so a row's result depends on its place in the ubatch. -> deploy/llama-patches/0002 makes
  those gemv kernels add in gemm's order; where the build says it carries that
  (`repack_invariant`), weights stay repacked as llama-server keeps them (about twice the plain
  dot product's prompt speed on Q4_K); elsewhere they are kept unrepacked (`model_params`).
- Unrepacked K-quant weights (Q6_K, Q5_K, Q3_K...) take a tiled kernel from 8 rows up and a dot
  product below, which add a row's terms in different orders. -> deploy/llama-patches/0003: with
  the switch on, Q6_K (the unrepacked part of a Q4_K_M model) keeps the tiled kernel and its rows
  below 8 take a dot product in that kernel's order, and the other types take the dot product
  for every size; where the build says it carries that (`tiled_invariant`), the tiled kernel
  stays on, as in llama-server. Elsewhere it is off for the process (`configure_process`,
  `prepare`) and the dot product serves every size.
- Flash attention has three paths: a loop over the KV cells for fewer than 64 query rows of a
  sequence, a tiled GEMM from 64 rows, and for a lone row with 512 or more cells a split of
  the cells across threads. -> deploy/llama-patches/0001 (applied by `make install`): after
  `use(True)` in the thread that calls llama_decode, every row of its graphs takes the tiled
  path, which computes each score as one FMA chain in a fixed order and walks the KV tiles
  from the stream's first cell, so a row's result depends on its own query, mask and cells
  only (each slot has its own KV stream); the tiled kernel multiplies only a tile's valid
  rows, so a decode row costs one row (0004 converts a one-row tile's keys 8x8 in registers
  and clears only its rows); and a tile's softmax weights are summed from the row's
  first nonzero weight, so an embedding batch, whose sequences share one stream at varying
  offsets, may place a short sequence anywhere within a key tile
  (server/engine/embedding/layout.py). The switch is per thread and per call.
  `available()` checks that the loaded build carries the patch. Prompts are evaluated a whole
  ubatch at a time.

What does not depend on the batch: everything else is computed row by row (norms, RoPE,
activations, the quantization of activations); the llamafile GEMM that multiplies Q8_0,
Q5_0 and Q4_0 weights from two rows up gives the same bits as the dot product used for one
row; and a KV cell's contents do not depend on the batch that wrote them, so cells kept for
prefix reuse or copied back from the RAM prompt cache equal freshly computed ones (each
sequence has its own KV stream, filled in position order, so attention visits its cells in
the same order).

Not covered (`unavailable` says which applies): GPU backends (their own kernel choices), flash
attention off (its KQ product takes the llamafile GEMM from two rows and a dot product for one),
a KV cache of another type than f16 or f32 (the tiled path reads only those), a llama.cpp built without the
patch, and f16/f32 weight matrices (the same GEMM and dot product disagree there).
BATCH_INVARIANT=off leaves every kernel choice to llama.cpp again.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path
from typing import Any

from server.engine.decoder_types import DecoderConfig
from server.settings import KV_CACHE_TYPES

TILED_MM = "GGML_CPU_TILED_MM"
_OWN_TILED_MM = TILED_MM not in os.environ  # an explicit setting is the operator's, never changed here
_CELL_TYPES = {0, 1}  # GGML_TYPE_F32, GGML_TYPE_F16: the KV cells the tiled flash attention reads


def _loaded_ggml_cpu() -> Path:
    """The ggml-cpu library this process runs: a wheel holds libggml-cpu.so, .so.0 and .so.0.x as
    three copies, and opening another copy than the one libllama loaded would give a second,
    unused instance of it."""
    import llama_cpp.llama_cpp  # noqa: F401  (loads libllama and, through it, libggml-cpu)

    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if Path(path).name.startswith("libggml-cpu"):
                return Path(path)
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib" / "libggml-cpu.so.0"


@functools.cache
def tiled_invariant() -> bool:
    """Whether the loaded llama.cpp carries deploy/llama-patches/0003 on a CPU where it holds: with
    the switch on, the tiled K-quant kernel and the dot product give a row the same bits."""
    return _flag("ggml_cpu_tiled_invariant_available")


@functools.cache
def repack_invariant() -> bool:
    """Whether the loaded llama.cpp carries deploy/llama-patches/0002 on a CPU where it was checked:
    each repacked weight type gives a row the same bits in a batch of any size."""
    return _flag("ggml_cpu_repack_invariant_available")


def _flag(name: str) -> bool:
    """A patch's availability function in the loaded ggml-cpu answers 1 (False: absent, or 0)."""
    fn = _function(name)
    if fn is None:
        return False
    fn.argtypes, fn.restype = [], ctypes.c_int
    return bool(fn() == 1)


def _function(name: str) -> Any:
    """A function of the ggml-cpu that llama_cpp loaded (None: this build lacks it)."""
    try:
        return getattr(ctypes.CDLL(str(_loaded_ggml_cpu())), name)
    except (OSError, AttributeError):
        return None


@functools.cache
def _switch() -> Any:
    """ggml_cpu_set_fa_invariant of the llama.cpp that llama_cpp loaded (None: built without the patch)."""
    fn = _function("ggml_cpu_set_fa_invariant")
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_bool], None
    return fn


def available() -> bool:
    """Whether the llama.cpp that llama_cpp loaded carries deploy/llama-patches/0001."""
    return _switch() is not None


def use(on: bool) -> None:
    """The graphs this thread computes next take the batch-invariant flash attention, or llama.cpp's
    own paths; called before every llama_decode, since a thread may serve two contexts."""
    switch = _switch()
    if switch is not None:
        switch(on)


def unavailable(cfg: DecoderConfig) -> str | None:
    """Why a decoder with DecoderConfig `cfg`, asked for invariance, cannot have it (None: it can)."""
    if cfg.n_gpu_layers != 0:
        return "layers on a GPU take the GPU's kernels"
    if cfg.flash_attn == "off":
        return "flash attention is off"
    if {KV_CACHE_TYPES[cfg.type_k].ggml, KV_CACHE_TYPES[cfg.type_v].ggml} - _CELL_TYPES:
        return "the KV cache is neither f16 nor f32 (the tiled flash attention reads only those)"
    if not available():
        return "this llama.cpp was built without deploy/llama-patches (make install applies them)"
    return None


def applies(cfg: DecoderConfig) -> bool:
    """Whether a decoder with DecoderConfig `cfg` gets batch-invariant kernels: asked for, and possible."""
    return bool(cfg.batch_invariant) and unavailable(cfg) is None


def configure_process() -> None:
    """Turn ggml-cpu's tiled K-quant matmul off, unless the build makes it batch-invariant. ggml
    reads the variable once, when the process creates its first context; so this runs when the
    decoder module is imported, before any llama.cpp context exists (a test session may make
    several), and `prepare` undoes it for a server started with BATCH_INVARIANT=off."""
    if _OWN_TILED_MM and not tiled_invariant():
        os.environ[TILED_MM] = "0"


def prepare(cfg: DecoderConfig) -> None:
    """Before the decoder's context is created: the kernel setting its config asks for."""
    if _OWN_TILED_MM:
        if applies(cfg) and not tiled_invariant():
            os.environ[TILED_MM] = "0"
        else:
            os.environ.pop(TILED_MM, None)


def model_params(mparams: Any) -> None:
    """Repack the weights into the row-grouped CPU layouts only where their kernels are batch-invariant."""
    mparams.use_extra_bufts = repack_invariant()
