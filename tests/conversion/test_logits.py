"""Converted models compute what the Hugging Face checkpoint computes.

The reference is tests/conversion/reference.py, a float64 numpy Llama on the
checkpoint's own weights. Metric: max |llama.cpp - reference| / max |reference|
over every logit of every position.
"""

from __future__ import annotations

import numpy as np
import pytest
import sentencepiece as spm

from tests.conversion.conftest import llama_logits, read_config
from tests.conversion.reference import forward
from tests.tiny_llama import read_checkpoint

TEXT = "The quick brown fox answers questions about rotary embeddings, 42 times."

# f32 GGUFs hold the checkpoint's exact values (fp16 and bf16 widen losslessly),
# so only float32 arithmetic separates them from the float64 reference (seen:
# ~4e-7). The f16 file holds the same fp16 weights, but llama.cpp's CPU f16
# matmuls round every activation to fp16 first (unit roundoff 2**-11 = 4.9e-4),
# at ~7 matmuls per layer, compounding through two layers and the output (seen:
# ~5e-4): 5e-3 leaves room for other BLAS paths and still fails by orders of
# magnitude on a layout error (a wrong permutation or head grouping moves
# logits by order 1). bf16 keeps 8 mantissa bits (roundoff 3.9e-3, seen ~2e-3);
# Q8_0 rounds both weights and, on CPU, activations to 8 bits (seen ~3e-2).
CASES = [
    ("tiny_llama_checkpoint", "f32", 1e-3),
    ("tiny_llama_checkpoint", "f16", 5e-3),
    ("bf16_checkpoint", "f32", 1e-3),
    ("bf16_checkpoint", "bf16", 2e-2),
    ("tiny_llama_checkpoint", "q8_0", 8e-2),
]


def tokens_for(hf_dir) -> list[int]:
    sp = spm.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
    return [sp.bos_id()] + sp.encode(TEXT)


@pytest.mark.parametrize("checkpoint, outtype, tolerance", CASES)
def test_logits_match_reference(request, converted, checkpoint, outtype, tolerance):
    hf_dir = request.getfixturevalue(checkpoint)
    tokens = tokens_for(hf_dir)
    expected = forward(read_checkpoint(hf_dir), read_config(hf_dir), tokens)
    got = llama_logits(converted(hf_dir, outtype), tokens)
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 1.0  # logits are not all ~0: the check means something
    assert np.std(expected[-1]) > 0.1
    error = np.abs(got - expected).max() / np.abs(expected).max()
    print(f"{checkpoint} {outtype}: relative max error {error:.2e}")
    assert error < tolerance
    assert (got.argmax(axis=-1) == expected.argmax(axis=-1)).mean() >= 0.8
