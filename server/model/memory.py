"""What a model will take in RAM and VRAM, estimated from its GGUF header before it loads.

The weights are each tensor's bytes, placed on the GPU or the CPU as the offload plan
puts them (server/model/offload.py); the KV cache is PARALLEL streams of N_CTX cells
per layer (sliding-window layers keep only their window and one micro-batch, as
llama.cpp sizes them); the compute buffer is llama.cpp's scratch for one micro-batch,
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

# Architectures whose layers alternate sliding-window and full attention: one full layer
# in every N (llama.cpp's hparams.set_swa_pattern for each).
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "cohere2": 4, "gemma3n": 5}
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


def kv_cells(shape: ModelShape, arch: str, n_swa: int, n_ctx: int, n_ubatch: int) -> list[int]:
    """Cells of one slot's stream per layer: N_CTX, or the window plus a micro-batch."""
    blocks = len(shape.layer_bytes)
    full = _pad(n_ctx, KV_PAD)
    pattern = SWA_PATTERN.get(arch)
    if not n_swa or pattern is None:
        return [full] * blocks
    swa = min(full, _pad(n_swa + n_ubatch, KV_PAD))
    return [full if (i + 1) % pattern == 0 else swa for i in range(blocks)]


def compute_bytes(shape: ModelShape, n_ctx: int, n_ubatch: int) -> int:
    """llama.cpp's scratch for one micro-batch: logits, and attention scores over the stream."""
    return 4 * n_ubatch * (shape.n_vocab + n_ctx * shape.n_head // 8 + 4 * shape.n_embd) + 16 * MIB


def estimate(settings: Settings, path: Path, plan: ParallelPlan, cache_ram_mib: int = 0) -> Memory:
    """What loading `path` with `settings` (and the slot/offload `plan` made for them) takes."""
    from server.model.ggufinfo import read_gguf_info

    shape = read_model_shape(path)
    meta = read_gguf_info(path).metadata
    arch = str(meta.get("general.architecture", ""))
    n_swa = int(meta.get(f"{arch}.attention.sliding_window", 0) or 0)
    n_ubatch = min(max(settings.n_batch, plan.n_parallel), 512)
    blocks = len(shape.layer_bytes)
    total_weights = sum(read_gguf_info(path).tensor_bytes.values())
    n_gpu = min(plan.offload.n_gpu_layers, plan.offload.total_layers)
    gpu_blocks = min(n_gpu, blocks)
    weights_vram = sum(shape.layer_bytes[blocks - gpu_blocks :]) + (shape.output_bytes if n_gpu > blocks else 0)
    per_cell = 2 * shape.n_embd_kv * KV_CACHE_TYPES[settings.kv_cache_type].bytes
    cells = kv_cells(shape, arch, n_swa, settings.n_ctx, n_ubatch)
    kv_layer = [int(c * per_cell) * plan.n_parallel for c in cells]
    kv_vram = sum(kv_layer[blocks - gpu_blocks :])
    compute = compute_bytes(shape, settings.n_ctx, n_ubatch)
    on_gpu = gpu_blocks > 0
    return Memory(
        weights_ram=total_weights - weights_vram,
        weights_vram=weights_vram,
        kv_ram=sum(kv_layer) - kv_vram,
        kv_vram=kv_vram,
        compute_ram=compute if not on_gpu else 16 * MIB,
        compute_vram=compute if on_gpu else 0,
        cache_ram=cache_ram_mib * MIB,
    )
