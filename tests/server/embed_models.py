"""A reranker GGUF for the tests, made from an embedding model's GGUF: the same BERT with a
classification head of seeded random weights (`cls`, then `cls.output`: one score) and pooling
"rank", as llama.cpp's converter writes BertForSequenceClassification rerankers.

Its scores mean nothing, but llama.cpp computes them exactly as for a real reranker, and
`head_score` computes the same function in numpy from the [CLS] vector, so a test can
check the served score against it.
"""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np

RANK = 4  # LLAMA_POOLING_TYPE_RANK


def head_weights(n_embd: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "cls.weight": rng.normal(0, 0.05, (n_embd, n_embd)).astype(np.float32),
        "cls.bias": rng.normal(0, 0.05, n_embd).astype(np.float32),
        "cls.output.weight": rng.normal(0, 0.5, (1, n_embd)).astype(np.float32),
        "cls.output.bias": np.array([0.25], dtype=np.float32),
    }


def head_score(cls_vector: np.ndarray, head: dict[str, np.ndarray]) -> float:
    """llama.cpp's rank head: cls.output(tanh(cls(h_CLS)))."""
    hidden = np.tanh(head["cls.weight"].astype(np.float64) @ cls_vector + head["cls.bias"])
    return float((head["cls.output.weight"].astype(np.float64) @ hidden + head["cls.output.bias"])[0])


def reranker_from(source: Path, target: Path, seed: int = 0) -> Path:
    """`source`'s model with a random head and pooling "rank", written to `target` (via a temp name)."""
    reader = gguf.GGUFReader(source)
    arch = str(reader.get_field("general.architecture").contents())
    n_embd = int(reader.get_field(f"{arch}.embedding_length").contents())
    partial = target.with_suffix(".partial")
    writer = gguf.GGUFWriter(partial, arch)
    for field in reader.fields.values():
        name = field.name
        if name == "general.architecture" or name.startswith("GGUF.") or name.endswith(".pooling_type"):
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_key_value(f"{arch}.pooling_type", RANK, gguf.GGUFValueType.UINT32)
    head = head_weights(n_embd, seed)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    for name, array in head.items():
        writer.add_tensor_info(name, array.shape, array.dtype, array.nbytes, gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    for array in head.values():
        writer.write_tensor_data(array)
    writer.close()
    os.replace(partial, target)
    return target
