"""llama.cpp's side of the BERT tests: tokenize with the GGUF's vocabulary, run one sequence per decode."""

from __future__ import annotations

import llama_cpp
import numpy as np

N_CTX = 512  # BERT's positions, and the physical batch: one sequence must fit in it whole


def llama_outputs(gguf_path, sequences: list[list[int]], pooling: int) -> list[np.ndarray]:
    """llama.cpp's pooled output (vector, or rank scores) for each id sequence, each decoded alone."""
    llm = llama_cpp.Llama(
        str(gguf_path), embedding=True, n_ctx=N_CTX, n_batch=N_CTX, n_ubatch=N_CTX, pooling_type=pooling,
        verbose=False,
    )  # fmt: skip
    try:
        rank = llama_cpp.llama_pooling_type(llm._ctx.ctx) == llama_cpp.LLAMA_POOLING_TYPE_RANK
        n_out = llama_cpp.llama_model_n_cls_out(llm.model) if rank else llm.n_embd()
        out = []
        for ids in sequences:
            llm._batch.reset()
            llm._batch.add_sequence(ids, 0, True)
            llm._ctx.kv_cache_clear()
            llm._ctx.decode(llm._batch)
            out.append(np.array(llama_cpp.llama_get_embeddings_seq(llm._ctx.ctx, 0)[:n_out], dtype=np.float64))
        return out
    finally:
        llm.close()


def tokenize(gguf_path, texts: list[str], wrap: bool) -> list[list[int]]:
    """llama.cpp's ids for each text (special tokens in it read as text); with `wrap`, [CLS] ... [SEP], cut
    to the model's positions."""
    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        seqs = [llm.tokenize(t.encode(), add_bos=wrap, special=False) for t in texts]
    finally:
        llm.close()
    return [ids[: N_CTX - 1] + ids[-1:] if len(ids) > N_CTX else ids for ids in seqs]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
