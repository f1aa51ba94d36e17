"""How many requests decode together (LLAMA_SERVER_PARALLEL), and why.

Every slot gets its own KV cache of N_CTX tokens, so PARALLEL slots cost
PARALLEL x N_CTX x (bytes per token): n_layer x (K width + V width) x the cache
type's element size, all read from the GGUF header. `auto` picks the most
slots, up to MAX_AUTO, that fit comfortably: the KV cells of layers left on the
CPU must take at most RAM_SHARE of the RAM still available after the weights,
and the KV cells of offloaded layers must not push a single layer off the GPU
(the offload plan is made for the whole cache). The rule is a pure function
of those byte counts, so it is tested without the memory it talks about.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

from server.model.offload import (
    MIB,
    Device,
    ModelShape,
    OffloadPlan,
    gpu_devices,
    kv_bytes_per_layer,
    read_model_shape,
    resolve_offload,
)
from server.settings import AUTO_PARALLEL_MAX, Settings

MAX_AUTO = AUTO_PARALLEL_MAX  # 4: beyond this, a laptop's cores gain little aggregate speed per added stream
RAM_SHARE = 0.5  # of the RAM left after the weights, what the KV cache may take


@dataclass(frozen=True)
class ParallelPlan:
    n_parallel: int
    mode: str  # "auto" or "fixed"
    kv_bytes_per_token: int
    kv_cache_mb: int  # all slots together
    ram_available_mb: int | None
    reason: str
    offload: OffloadPlan  # made for the KV cache of all slots

    def as_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "offload"}


def available_ram() -> int | None:
    """Bytes the kernel says can be used without swapping (MemAvailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def plan_parallel(
    settings: Settings, model_path: Path, devices: Sequence[Device] | None = None, ram_bytes: int | None = -1
) -> ParallelPlan:
    """Resolve PARALLEL (and the offload plan that goes with it). `ram_bytes`: -1 reads it."""
    shape = read_model_shape(model_path)
    devices = gpu_devices() if devices is None else list(devices)
    ram = available_ram() if ram_bytes == -1 else ram_bytes
    blocks = len(shape.layer_bytes)
    per_slot = kv_bytes_per_layer(shape, settings.n_ctx, settings.kv_cache_type) * blocks
    per_token = per_slot // settings.n_ctx

    def offload_for(n: int) -> OffloadPlan:
        return resolve_offload(replace(settings, n_ctx=settings.n_ctx * n), model_path, devices)

    def plan(n: int, mode: str, reason: str, offload: OffloadPlan) -> ParallelPlan:
        return ParallelPlan(
            n, mode, per_token, n * per_slot // MIB, None if ram is None else ram // MIB, reason, offload
        )

    if isinstance(settings.parallel, int):  # else "auto"
        n = settings.parallel
        return plan(n, "fixed", f"{n} requested", offload_for(n))
    base = offload_for(1)
    refused = ""  # why one slot more did not fit, for the log
    for n in range(min(MAX_AUTO, settings.n_batch), 0, -1):
        # Without a GPU every plan is "all on CPU": no need to read the header again.
        offload = base if n == 1 or not devices else offload_for(n)
        problem = _problem(shape, offload, base, n * per_slot, ram)
        if problem is None or n == 1:
            why = f"{n} x {settings.n_ctx} tokens fit" if problem is None else f"1 slot; even that {problem}"
            return plan(n, "auto", why + (f"; {refused}" if refused else ""), offload)
        refused = f"{n} slots: {problem}"
    raise AssertionError("unreachable: n == 1 always returns")


def _problem(shape: ModelShape, offload: OffloadPlan, base: OffloadPlan, kv_bytes: int, ram: int | None) -> str | None:
    """Why a KV cache of `kv_bytes` does not fit comfortably, or None when it does."""
    blocks = len(shape.layer_bytes)
    if offload.n_gpu_layers < base.n_gpu_layers:
        return f"the KV cache would push {base.n_gpu_layers - offload.n_gpu_layers} layers off the GPU"
    if offload.n_gpu_layers and offload.vram_free_mb is not None and offload.vram_planned_mb > offload.vram_free_mb:
        return f"the GPU part needs {offload.vram_planned_mb} MiB of {offload.vram_free_mb} MiB free"
    if ram is None:
        return None
    cpu_blocks = blocks - min(offload.n_gpu_layers, blocks)
    weights = sum(shape.layer_bytes[:cpu_blocks]) + (shape.output_bytes if offload.n_gpu_layers <= blocks else 0)
    kv_ram = kv_bytes * cpu_blocks // blocks
    room = int((ram - weights) * RAM_SHARE)
    if kv_ram > room:
        return (
            f"KV cache {kv_ram // MIB} MiB in RAM is over {int(RAM_SHARE * 100)}% of the "
            f"{max(ram - weights, 0) // MIB} MiB left after the weights"
        )
    return None
