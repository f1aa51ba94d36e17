"""PARALLEL=auto: how many slots fit, from the KV bytes per token read from a real GGUF.

The rule is exercised with the memory it talks about given as numbers (RAM
available, a GPU this machine does not have), so every branch runs here.
"""

from __future__ import annotations

import pytest

from server.model.offload import MIB, Device, read_model_shape, resolve_offload
from server.model.parallel import MAX_AUTO, RAM_SHARE, plan_parallel
from server.settings import Settings

# Gemma 3 270M as published: 18 layers, one KV head of 256 dims; f16 K and V.
GEMMA_KV_BYTES_PER_TOKEN = 18 * (256 + 256) * 2
PLENTY = 64 << 30
BIG_GPU = Device("CUDA0", "NVIDIA H100 80GB HBM3", "GPU", free_bytes=79 * 1024 * MIB, total_bytes=80 * 1024 * MIB)


def cpu_weights(path) -> int:
    shape = read_model_shape(path)
    return sum(shape.layer_bytes) + shape.output_bytes


def test_kv_bytes_per_token_come_from_the_gguf(gemma_gguf):
    plan = plan_parallel(Settings(n_ctx=4096), gemma_gguf, devices=[], ram_bytes=PLENTY)
    assert plan.kv_bytes_per_token == GEMMA_KV_BYTES_PER_TOKEN
    assert plan.kv_cache_mb == plan.n_parallel * 4096 * GEMMA_KV_BYTES_PER_TOKEN // MIB


def test_a_fixed_count_is_kept(gemma_gguf):
    plan = plan_parallel(Settings(parallel=3), gemma_gguf, devices=[], ram_bytes=1)
    assert (plan.n_parallel, plan.mode, plan.reason) == (3, "fixed", "3 requested")


def test_auto_takes_the_most_slots_when_memory_is_plentiful(gemma_gguf):
    plan = plan_parallel(Settings(), gemma_gguf, devices=[], ram_bytes=PLENTY)
    assert plan.n_parallel == MAX_AUTO and plan.mode == "auto"
    assert plan.offload.n_gpu_layers == 0 and plan.ram_available_mb == PLENTY // MIB
    assert plan_parallel(Settings(n_batch=2), gemma_gguf, devices=[], ram_bytes=PLENTY).n_parallel == 2


@pytest.mark.parametrize("slots_that_fit", [1, 2, 3])
def test_auto_takes_fewer_slots_when_their_kv_cache_would_crowd_ram(gemma_gguf, slots_that_fit):
    n_ctx = 32768
    per_slot = n_ctx * GEMMA_KV_BYTES_PER_TOKEN
    # Exactly room for `slots_that_fit` KV caches within RAM_SHARE of what the weights leave.
    ram = cpu_weights(gemma_gguf) + int(slots_that_fit * per_slot / RAM_SHARE) + MIB
    plan = plan_parallel(Settings(n_ctx=n_ctx), gemma_gguf, devices=[], ram_bytes=ram)
    assert plan.n_parallel == slots_that_fit
    assert f"{slots_that_fit + 1} slots: KV cache" in plan.reason  # says what did not fit


def test_one_slot_even_when_that_does_not_fit_says_so(gemma_gguf):
    plan = plan_parallel(Settings(n_ctx=32768), gemma_gguf, devices=[], ram_bytes=cpu_weights(gemma_gguf))
    assert plan.n_parallel == 1 and "even that" in plan.reason


def test_auto_on_a_large_gpu_puts_everything_there(gemma_gguf):
    plan = plan_parallel(Settings(), gemma_gguf, devices=[BIG_GPU], ram_bytes=1)
    assert plan.n_parallel == MAX_AUTO
    assert plan.offload.n_gpu_layers == plan.offload.total_layers  # no KV cell left in RAM


@pytest.mark.parametrize("budget_mb", [1200, 1600, 2400, 3200, 4800])
def test_slots_never_push_layers_off_the_gpu(gemma_gguf, budget_mb):
    settings = Settings(n_ctx=16384, vram_budget_mb=budget_mb, vram_margin_mb=128)
    plan = plan_parallel(settings, gemma_gguf, devices=[BIG_GPU], ram_bytes=PLENTY)
    one_slot = resolve_offload(settings, gemma_gguf, devices=[BIG_GPU])
    assert plan.offload.n_gpu_layers == one_slot.n_gpu_layers
    if plan.n_parallel < MAX_AUTO:
        more = Settings(n_ctx=16384 * (plan.n_parallel + 1), vram_budget_mb=budget_mb, vram_margin_mb=128)
        assert resolve_offload(more, gemma_gguf, devices=[BIG_GPU]).n_gpu_layers < one_slot.n_gpu_layers
        assert "off the GPU" in plan.reason
