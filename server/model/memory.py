"""What a model will take in RAM and VRAM, estimated from its GGUF header before it loads.

The weights are each tensor's bytes, placed on the GPU or the CPU as the offload plan
puts them (server/model/offload.py); the KV cache is PARALLEL streams of N_CTX cells
per layer; the compute buffer is llama.cpp's scratch for one micro-batch,
dominated by the logits (micro-batch x vocabulary) and the attention scores. The
prompt cache in RAM (CACHE_RAM) grows as prompts are kept, so it is reported apart
(`cache_ram`) and counted against the budget as the most it may take. Once a model
is loaded the sizes llama.cpp reports (server/engine/llamalog.py) replace these.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from server.model.offload import MIB, ModelShape, read_model_shape
from server.model.parallel import ParallelPlan
from server.settings import KV_CACHE_TYPES, Settings

KV_PAD = 256  # llama.cpp pads a KV stream's cells to this


@dataclass(frozen=True)
class Memory:
    """Bytes by place and kind; an estimate or llama.cpp's own report."""

    weights_ram: int = 0
    weights_vram: int = 0
    kv_ram: int = 0
    kv_vram: int = 0
    compute_ram: int = 0
    compute_vram: int = 0
    cache_ram: int = 0  # the prompt cache's limit (grows with use)

    @property
    def ram(self) -> int:
        return self.weights_ram + self.kv_ram + self.compute_ram

    @property
    def vram(self) -> int:
        return self.weights_vram + self.kv_vram + self.compute_vram

    @property
    def total(self) -> int:
        return self.ram + self.vram

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "ram": self.ram, "vram": self.vram, "total": self.total}


def _pad(n: int, to: int) -> int:
    return -(-n // to) * to


def kv_cells(n_ctx: int) -> int:
    """Cells of one slot's KV stream in every layer. Sliding-window layers get as many as the
    others: the context is made with llama.cpp's default swa_full, which keeps whole streams
    so that a slot's prefix can be reused."""
    return _pad(n_ctx, KV_PAD)


def compute_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int) -> int:
    """llama.cpp's scratch for one micro-batch, its largest moment: the logits (micro-batch x
    vocabulary floats), or the attention scores (micro-batch x cells x heads) where flash
    attention does not take them, whichever is larger, plus a little. Measured on SmolLM2,
    Gemma 3 and a tiny Llama: within 7% of what llama.cpp reported."""
    logits = shape.n_vocab + 2 * shape.n_embd
    scores = _pad(n_ctx, KV_PAD) * shape.n_head
    return 4 * n_ubatch * max(logits, scores) + MIB


def estimate(settings: Settings, path: Path, plan: ParallelPlan, cache_ram_mib: int = 0) -> Memory:
    """What loading `path` with `settings` (and the slot/offload `plan` made for them) takes."""
    from server.model.ggufinfo import read_gguf_info

    shape = read_model_shape(path)
    n_ubatch = min(max(settings.n_batch, plan.n_parallel), 512)
    blocks = len(shape.layer_bytes)
    total_weights = sum(read_gguf_info(path).tensor_bytes.values())
    n_gpu = min(plan.offload.n_gpu_layers, plan.offload.total_layers)
    gpu_blocks = min(n_gpu, blocks)
    weights_vram = sum(shape.layer_bytes[blocks - gpu_blocks :]) + (shape.output_bytes if n_gpu > blocks else 0)
    kv_layer = int(kv_cells(settings.n_ctx) * 2 * shape.n_embd_kv * KV_CACHE_TYPES[settings.kv_cache_type].bytes)
    kv_layer *= plan.n_parallel
    kv_vram = kv_layer * gpu_blocks
    compute = compute_bytes(shape, settings.n_ctx, n_ubatch)
    on_gpu = gpu_blocks > 0
    return Memory(
        weights_ram=total_weights - weights_vram,
        weights_vram=weights_vram,
        kv_ram=kv_layer * blocks - kv_vram,
        kv_vram=kv_vram,
        compute_ram=compute if not on_gpu else 16 * MIB,
        compute_vram=compute if on_gpu else 0,
        cache_ram=cache_ram_mib * MIB,
    )
