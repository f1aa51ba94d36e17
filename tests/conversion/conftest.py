"""Fixtures of the conversion tests: more tiny checkpoints (Llama, a BERT reranker), a loader for llama.cpp logits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.tiny_bert import RERANKER_FOLDER, write_tiny_reranker
from tests.tiny_llama import TinySpec, write_tiny_llama


@pytest.fixture(scope="session")
def bf16_checkpoint(tmp_path_factory):
    """bf16 storage, plain multi-head attention, tied embeddings, three shards, another rope base."""
    spec = TinySpec(
        dtype="BF16", num_key_value_heads=4, tie_word_embeddings=True, shards=3, rope_theta=500000.0, seed=1
    )
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama-bf16"), spec)


@pytest.fixture(scope="session")
def tiny_reranker_checkpoint(tmp_path_factory, minilm_checkpoint):
    """The seeded tiny BERT reranker (tests/tiny_bert.py), in a folder named as when its reference hashes were made."""
    return write_tiny_reranker(tmp_path_factory.mktemp("tiny-bert") / RERANKER_FOLDER, minilm_checkpoint)


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """convert(checkpoint, outtype) once per pair for the whole session."""
    from conversion.converter import convert

    cache = {}

    def get(hf_dir, outtype):
        key = (str(hf_dir), outtype)
        if key not in cache:
            out = tmp_path_factory.mktemp("converted") / f"model.{outtype}.gguf"
            cache[key] = convert(hf_dir, out, outtype=outtype, progress=False)
        return cache[key]

    return get


def llama_logits(gguf_path, tokens: list[int]) -> np.ndarray:
    """Logits of every position from llama.cpp, with an f32 KV cache so only the weights differ."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(gguf_path),
        n_ctx=64,
        n_batch=64,
        logits_all=True,
        verbose=False,
        type_k=llama_cpp.GGML_TYPE_F32,
        type_v=llama_cpp.GGML_TYPE_F32,
        seed=0,
    )
    try:
        llm.eval(tokens)
        return np.array(llm.scores[: len(tokens)], dtype=np.float64)
    finally:
        llm.close()


def read_config(hf_dir) -> dict:
    return json.loads((hf_dir / "config.json").read_text())
