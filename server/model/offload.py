"""How many layers go to the GPU: `auto` offload, and what was chosen.

`plan_offload` is a pure function over byte counts, so the rule is tested without
a GPU. The inputs come from the GGUF itself (each layer's tensor sizes, read from
its header), from the KV cache that N_CTX implies, and from ggml's device
API (free VRAM per GPU), queried through ctypes on the ggml library that
llama-cpp-python ships. A CPU-only build, or a build with no device found, gets 0.
"""

from __future__ import annotations

import ctypes
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from server.model.ggufinfo import read_gguf_info
from server.settings import KV_CACHE_TYPES, Settings

log = logging.getLogger(__name__)
MIB = 1 << 20
# ggml_backend_dev_type values that hold layers on their own memory.
GPU_DEVICE_TYPES = {1: "GPU", 2: "IGPU"}
_BLOCK = re.compile(r"^blk\.(\d+)\.")


@dataclass(frozen=True)
class ModelShape:
    """What auto offload needs to know about a GGUF file."""

    layer_bytes: tuple[int, ...]  # repeating blocks, blk.0 first
    output_bytes: int  # the output layer llama.cpp offloads as layer n_layer+1
    n_embd: int
    n_head: int
    n_embd_kv: int  # K (= V) width per token per layer: head_dim * n_head_kv
    n_vocab: int


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    kind: str
    free_bytes: int
    total_bytes: int


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int  # what llama.cpp gets: 0 .. total_layers
    total_layers: int  # repeating blocks + the output layer
    mode: str  # "auto" or "fixed"
    backend: str
    device: str | None
    vram_free_mb: int | None
    vram_planned_mb: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def plan_offload(
    layer_bytes: Sequence[int],
    kv_bytes_per_layer: int,
    compute_bytes: int,
    free_bytes: int,
    margin: int,
    output_bytes: int = 0,
) -> int:
    """Layers that fit in `free_bytes - margin - compute_bytes`.

    llama.cpp offloads the *last* n layers of the stack, and the output layer
    only once every block is on the GPU, so blocks are counted from the top
    down and the output layer last. Each block also brings its KV cache.
    """
    room = free_bytes - margin - compute_bytes
    placed = 0
    for size in reversed(layer_bytes):
        room -= size + kv_bytes_per_layer
        if room < 0:
            return placed
        placed += 1
    return placed + 1 if room >= output_bytes else placed


def read_model_shape(path: Path) -> ModelShape:
    """Per-layer tensor bytes and the KV-cache geometry, from the GGUF header."""
    info = read_gguf_info(path)
    meta = info.metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise ValueError("the header names no general.architecture")

    def key(name: str, default: int | None = None) -> Any:
        value = meta.get(f"{arch}.{name}", default)
        if value is None:  # ValueError naming the key, not int(None)'s TypeError
            raise ValueError(f"the header has no {arch}.{name}")
        return value

    layers = [0] * int(key("block_count"))
    other: dict[str, int] = {}
    for name, size in info.tensor_bytes.items():
        m = _BLOCK.match(name)
        if m:
            layers[int(m.group(1))] += size
        else:
            other[name] = size
    # With tied embeddings llama.cpp puts a copy of token_embd on the output device.
    output = other.get("output.weight", other.get("token_embd.weight", 0)) + other.get("output_norm.weight", 0)
    n_embd, n_head = int(key("embedding_length")), int(key("attention.head_count"))
    n_head_kv = int(key("attention.head_count_kv", n_head))
    head_dim = int(key("attention.key_length", n_embd // n_head))
    return ModelShape(
        tuple(layers), output, n_embd, n_head, head_dim * n_head_kv, int(meta.get("tokenizer.ggml.tokens", 32000))
    )


def kv_bytes_per_layer(shape: ModelShape, n_ctx: int, kv_type: str) -> int:
    """K and V of one layer for `n_ctx` tokens; `kv_type` names a row of KV_CACHE_TYPES."""
    return int(2 * n_ctx * shape.n_embd_kv * KV_CACHE_TYPES[kv_type].bytes)


def compute_allowance(shape: ModelShape, n_ctx: int, n_batch: int) -> int:
    """A generous estimate of llama.cpp's GPU compute buffer.

    The two large scratch tensors are the logits (n_batch x n_vocab floats) and
    the attention scores (n_batch x n_ctx x n_head floats); 64 MiB covers the rest.
    """
    ubatch = min(n_batch, 512)
    return 4 * ubatch * (shape.n_vocab + n_ctx * shape.n_head) + 64 * MIB


def gpu_devices() -> list[Device]:
    """GPU devices llama.cpp can offload to; [] on a CPU-only build."""
    import llama_cpp
    from llama_cpp._ggml import libggml as g

    if not llama_cpp.llama_supports_gpu_offload():
        return []
    p, size = ctypes.c_void_p, ctypes.c_size_t
    for fn, res, args in (
        ("ggml_backend_dev_count", size, []),
        ("ggml_backend_dev_get", p, [size]),
        ("ggml_backend_dev_name", ctypes.c_char_p, [p]),
        ("ggml_backend_dev_description", ctypes.c_char_p, [p]),
        ("ggml_backend_dev_type", ctypes.c_int, [p]),
        ("ggml_backend_dev_memory", None, [p, ctypes.POINTER(size), ctypes.POINTER(size)]),
    ):
        getattr(g, fn).restype, getattr(g, fn).argtypes = res, args
    found = []
    for i in range(g.ggml_backend_dev_count()):
        dev = g.ggml_backend_dev_get(i)
        kind = GPU_DEVICE_TYPES.get(g.ggml_backend_dev_type(dev))
        if kind is None:
            continue
        free, total = size(), size()
        g.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        found.append(
            Device(
                g.ggml_backend_dev_name(dev).decode(),
                g.ggml_backend_dev_description(dev).decode(),
                kind,
                free.value,
                total.value,
            )
        )
    return found


def resolve_offload(settings: Settings, model_path: Path, devices: Sequence[Device] | None = None) -> OffloadPlan:
    """Turn N_GPU_LAYERS (a number, -1 or auto) into the count llama.cpp gets."""
    shape = read_model_shape(model_path)
    total = len(shape.layer_bytes) + 1
    devices = gpu_devices() if devices is None else list(devices)
    backend = devices[0].name.rstrip("0123456789") if devices else "CPU"
    device = ", ".join(d.description for d in devices) or None
    kv = kv_bytes_per_layer(shape, settings.n_ctx, settings.kv_cache_type)
    if not devices:
        return OffloadPlan(
            0,
            total,
            "auto" if settings.n_gpu_layers == "auto" else "fixed",
            "CPU",
            None,
            None,
            0,
            "no GPU backend or device: all layers on CPU",
        )
    free = sum(d.free_bytes for d in devices)
    if settings.vram_budget_mb is not None:
        free = min(free, settings.vram_budget_mb * MIB)
    if isinstance(settings.n_gpu_layers, int):  # else "auto"
        n = total if settings.n_gpu_layers == -1 else min(settings.n_gpu_layers, total)
        mode, reason = "fixed", f"{n} layers requested"
    else:
        compute = compute_allowance(shape, settings.n_ctx, settings.n_batch)
        n = plan_offload(shape.layer_bytes, kv, compute, free, settings.vram_margin_mb * MIB, shape.output_bytes)
        mode, reason = "auto", f"fits {free // MIB} MiB free minus {settings.vram_margin_mb} MiB margin"
    blocks = min(n, len(shape.layer_bytes))
    on_gpu = shape.layer_bytes[len(shape.layer_bytes) - blocks :]
    planned = sum(on_gpu) + kv * len(on_gpu) + (shape.output_bytes if n == total else 0)
    return OffloadPlan(n, total, mode, backend, device, free // MIB, planned // MIB, reason)
