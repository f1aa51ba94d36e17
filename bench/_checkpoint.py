"""Write a Hugging Face Llama checkpoint with random fp16 weights and chosen shapes.

The 7B preset has exactly Llama-2-7B's shapes and file layout (two safetensors
shards plus model.safetensors.index.json, the tokenizer files, configs), so that
a converter does the same work as on the real model. Weights are cheap: one small
pool of normal values (std 0.02) is tiled with a per-tensor offset and written in
chunks, so no tensor is ever held whole and 13.5 GB takes about as long as the
disk needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from _llama2_files import generation_config, special_tokens_map, tokenizer_config

POOL_ELEMENTS = 1 << 22  # 8 MiB of fp16: far larger than a row, small to generate
SHARD_LIMIT = 10 * 10**9  # Hugging Face's max_shard_size="10GB", which gave Llama-2-7B two shards
MARKER = ".complete"


@dataclass(frozen=True)
class Shape:
    hidden: int = 4096
    intermediate: int = 11008
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    vocab: int = 32000
    max_positions: int = 4096


PRESETS = {
    "7b": Shape(),
    # Small enough for a smoke run in seconds; rows stay multiples of 256 for k-quants.
    "tiny": Shape(hidden=256, intermediate=768, layers=2, heads=4, kv_heads=4),
}


def tensor_shapes(s: Shape) -> list[tuple[str, tuple[int, ...]]]:
    """HF names and shapes in state_dict order (the order save_pretrained shards in)."""
    head_dim = s.hidden // s.heads
    kv = s.kv_heads * head_dim
    out = [("model.embed_tokens.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"model.layers.{i}."
        out += [
            (p + "self_attn.q_proj.weight", (s.hidden, s.hidden)),
            (p + "self_attn.k_proj.weight", (kv, s.hidden)),
            (p + "self_attn.v_proj.weight", (kv, s.hidden)),
            (p + "self_attn.o_proj.weight", (s.hidden, s.hidden)),
            (p + "mlp.gate_proj.weight", (s.intermediate, s.hidden)),
            (p + "mlp.up_proj.weight", (s.intermediate, s.hidden)),
            (p + "mlp.down_proj.weight", (s.hidden, s.intermediate)),
            (p + "input_layernorm.weight", (s.hidden,)),
            (p + "post_attention_layernorm.weight", (s.hidden,)),
        ]
    out += [("model.norm.weight", (s.hidden,)), ("lm_head.weight", (s.vocab, s.hidden))]
    return out


def shard_plan(shapes: list[tuple[str, tuple[int, ...]]]) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Split greedily at SHARD_LIMIT bytes, like save_pretrained."""
    shards: list[list] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = 2 * int(np.prod(shape))
        if shards[-1] and size + nbytes > SHARD_LIMIT:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    return shards


def config_json(s: Shape) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "initializer_range": 0.02,
        "intermediate_size": s.intermediate,
        "max_position_embeddings": s.max_positions,
        "model_type": "llama",
        "num_attention_heads": s.heads,
        "num_hidden_layers": s.layers,
        "num_key_value_heads": s.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.31.0.dev0",
        "use_cache": True,
        "vocab_size": s.vocab,
    }


def _write_tensor(f, pool: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    """Stream `prod(shape)` fp16 values from the pool, starting at a name-derived offset."""
    remaining = int(np.prod(shape))
    pos = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % len(pool)
    norm = name.endswith("norm.weight")  # RMSNorm gains sit near 1, not 0
    while remaining:
        n = min(remaining, len(pool) - pos)
        chunk = pool[pos : pos + n]
        f.write((chunk + np.float16(1.0)).tobytes() if norm else memoryview(chunk))
        remaining -= n
        pos = 0


def write_shard(path: Path, pool: np.ndarray, tensors: list[tuple[str, tuple[int, ...]]]) -> int:
    """One safetensors file: u64 LE header length, JSON header, raw data; returns bytes written.

    Names are sorted in the file the way the safetensors library stores them.
    """
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    ordered = sorted(tensors)
    for name, shape in ordered:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as the library does
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape in ordered:
            _write_tensor(f, pool, name, shape)
    os.replace(partial, path)
    return offset


def _marker_text(shape: Shape, tokenizer: Path, seed: int) -> str:
    digest = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
    return json.dumps({"shape": asdict(shape), "seed": seed, "tokenizer_sha256": digest}, sort_keys=True)


def is_complete(out: Path, shape: Shape, tokenizer: Path, seed: int) -> bool:
    marker = out / MARKER
    return marker.is_file() and marker.read_text() == _marker_text(shape, tokenizer, seed)


def write_checkpoint(out: Path, shape: Shape, tokenizer: Path, seed: int = 0) -> Path:
    """Write the whole checkpoint directory; the marker file goes last."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pool = (np.random.default_rng(seed).standard_normal(POOL_ELEMENTS, dtype=np.float32) * 0.02).astype(np.float16)
    shards = shard_plan(tensor_shapes(shape))
    weight_map, total = {}, 0
    for i, tensors in enumerate(shards, start=1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(out / fname, pool, tensors)
        weight_map.update({name: fname for name, _ in tensors})
    files = {
        "model.safetensors.index.json": {"metadata": {"total_size": total}, "weight_map": weight_map},
        "config.json": config_json(shape),
        "generation_config.json": generation_config(),
        "special_tokens_map.json": special_tokens_map(),
        "tokenizer_config.json": tokenizer_config(),
    }
    for fname, content in files.items():
        (out / fname).write_text(json.dumps(content, indent=2) + "\n")
    shutil.copyfile(tokenizer, out / "tokenizer.model")
    (out / MARKER).write_text(_marker_text(shape, tokenizer, seed))
    return out
