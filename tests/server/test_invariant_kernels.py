"""A prompt's logits do not depend on how it is cut into llama_decode calls, on the weights the
server loads as it loads them (server/engine/opening.py): Gemma 3's Q4_K_M weights, its Q4_K
tensors repacked into llama.cpp's row-interleaved CPU layout (deploy/llama-patches/0002) and its
Q6_K tensors through the tiled kernel from 8 rows up (deploy/llama-patches/0003), where the build
makes those batch-invariant; SmolLM2's Q4_1 weights as stored.

Every cut below puts each position in another place of its batch: alone, among the last 1-3 rows
that the repacked product hands to its one-row kernel, inside a group of four, inside a group of
sixteen, below and above the tiled kernel's 8-row floor. The end-to-end property (answers alone,
together, restored) is tests/server/test_invariance.py; this is the kernel-level rule it rests on,
with every position's full logits compared bit for bit.
"""

from __future__ import annotations

import os
import platform

import llama_cpp.llama_cpp as lc
import numpy as np
import pytest
from llama_cpp import _internals

from server.engine import invariance
from server.engine.decoder_types import DecoderConfig
from server.engine.opening import open_model

TEXT = (
    "The committee met on Tuesday to review the budget. After a long discussion about the costs of the new "
    "library wing, the members agreed to postpone the vote until the architects could present a revised plan. "
    "Meanwhile, the treasurer reported that donations had risen by twelve percent since spring. "
    "def mean(xs):\n    return sum(xs) / len(xs)  # 42 items, 3.14159\n"
    "Die Sitzung endete um halb acht; 会议在七点半结束。 The minutes were signed by all nine members, "
    "and a copy was sent to the city council, the press office and the friends of the library."
)
# Cuts of the prompt into consecutive llama_decode calls (the last part takes what is left).
CUTS = {
    "whole": [],
    "small parts": [1, 2, 3, 5, 6, 7, 9, 13, 17, 2, 1, 19, 4],
    "by fours, then one": [4, 4, 8, 16, 1, 4, 3, 33],
}


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def opened(request):
    path = request.getfixturevalue(f"{request.param}_gguf")
    cfg = DecoderConfig(n_parallel=1, n_ctx_per_seq=512, speculative="off", prefix_cache=False, cache_ram_mib=0)
    model, ctx, cfg, _ = open_model(path, cfg)
    assert invariance.applies(cfg), invariance.unavailable(cfg)
    yield model, ctx
    ctx.close()
    model.close()


def logits_of(model, ctx, tokens: list[int], cut: list[int]) -> np.ndarray:
    """Every position's logits, the prompt decoded in parts of the sizes `cut` (then the rest)."""
    lc.llama_memory_clear(lc.llama_get_memory(ctx.ctx), True)
    n_vocab = model.n_vocab()
    out = np.empty((len(tokens), n_vocab), dtype=np.float32)
    batch = _internals.LlamaBatch(n_tokens=len(tokens), embd=0, n_seq_max=1)
    sizes, done = [*cut, len(tokens)], 0
    try:
        for size in sizes:
            part = tokens[done : done + size]
            if not part:
                break
            batch.set_batch(part, n_past=done, logits_all=True)
            invariance.use(True)
            ctx.decode(batch)
            for i in range(len(part)):
                out[done + i] = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx.ctx, i), shape=(n_vocab,))
            done += len(part)
    finally:
        batch.close()
    return out


def test_the_fast_kernels_are_kept_where_they_are_batch_invariant():
    params = lc.llama_model_default_params()
    invariance.model_params(params)
    flags = open("/proc/cpuinfo").read()
    on_x86_avx2 = platform.machine() in ("x86_64", "AMD64") and " avx2 " in flags and " fma " in flags
    # the patched kernels were checked on x86 only
    assert invariance.repack_invariant() == invariance.tiled_invariant() == on_x86_avx2
    assert params.use_extra_bufts == invariance.repack_invariant()
    if invariance.tiled_invariant():
        assert os.environ.get(invariance.TILED_MM) != "0", "the tiled K-quant kernel must stay on"


def test_a_prompts_logits_do_not_depend_on_how_it_is_cut(opened):
    model, ctx = opened
    tokens = model.tokenize(TEXT.encode(), add_bos=True, special=False)
    assert len(tokens) > sum(max(CUTS.values(), key=sum)), "the prompt must outlast every cut"
    whole = logits_of(model, ctx, tokens, CUTS["whole"])
    row_by_row = logits_of(model, ctx, tokens[:24], [1] * 24)
    assert np.array_equal(row_by_row.view(np.uint32), whole[:24].view(np.uint32)), "alone vs in one batch"
    for name, cut in CUTS.items():
        got = logits_of(model, ctx, tokens, cut)
        differ = np.flatnonzero((got.view(np.uint32) != whole.view(np.uint32)).any(axis=1))
        assert differ.size == 0, f"{name}: positions {differ.tolist()} differ from the whole prompt's"
