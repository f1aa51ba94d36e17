"""`auto` GPU offload: the pure planner over recorded layer sizes, and its inputs read from a real GGUF."""

from __future__ import annotations

import pytest

from server.model.offload import MIB, Device, kv_bytes_per_layer, plan_offload, read_model_shape, resolve_offload
from server.settings import Settings

# Llama-2-7B-chat Q4_K_M as llama.cpp lays it out: 32 blocks of ~118.6 MiB (Q4_K/Q6_K mix),
# output.weight (Q6_K, 4096 x 32000) + output_norm ~ 102.6 MiB. KV per layer at n_ctx 4096,
# f16: 2 x 4096 x 4096 x 2 bytes = 64 MiB.
LLAMA2_7B_LAYER = int(118.6 * MIB)
LLAMA2_7B_LAYERS = [LLAMA2_7B_LAYER] * 32
LLAMA2_7B_OUTPUT = int(102.6 * MIB)
KV_4096 = 64 * MIB
COMPUTE = 300 * MIB
MARGIN = 512 * MIB

BLOCK = LLAMA2_7B_LAYER + KV_4096  # a block brings its KV cache along


def plan(free_bytes: int) -> int:
    return plan_offload(LLAMA2_7B_LAYERS, KV_4096, COMPUTE, free_bytes, MARGIN, LLAMA2_7B_OUTPUT)


# By hand: a block takes 118.6 + 64 = 182.6 MiB of what the margin and the compute buffer leave
# (free - 812 MiB); the output layer (102.6 MiB) only once all 32 blocks are there (5843 MiB).
# None, less than margin + compute, room for one block, a 4 GB laptop GPU ((4096 - 812) / 182.6
# = 17.98), an 8 GB one and a large one.
@pytest.mark.parametrize("free_mib, layers", [(0, 0), (800, 0), (1000, 1), (4096, 17), (8192, 33), (80 * 1024, 33)])
def test_plan_counts_whole_layers_that_fit(free_mib, layers):
    assert plan(free_mib * MIB) == layers


@pytest.mark.parametrize("blocks", [1, 17, 32])
def test_a_block_fits_to_the_byte(blocks):
    exact = MARGIN + COMPUTE + blocks * BLOCK
    assert plan(exact) == blocks and plan(exact - 1) == blocks - 1


def test_the_output_layer_fits_to_the_byte():
    exact = MARGIN + COMPUTE + 32 * BLOCK + LLAMA2_7B_OUTPUT
    assert plan(exact) == 33 and plan(exact - 1) == 32


def test_output_layer_only_after_every_block():
    blocks = [100, 100]
    assert plan_offload(blocks, 0, 0, 250, 0, output_bytes=100) == 2  # both blocks, no room for output
    assert plan_offload(blocks, 0, 0, 300, 0, output_bytes=100) == 3  # everything


def test_blocks_are_placed_from_the_top_of_the_stack():
    # llama.cpp offloads the last n blocks: a large last block decides whether anything fits.
    assert plan_offload([10, 10, 500], 0, 0, 100, 0) == 0
    assert plan_offload([500, 10, 10], 0, 0, 100, 0) == 2


def test_reads_layer_sizes_from_the_gguf(gemma_gguf):
    shape = read_model_shape(gemma_gguf)
    assert len(shape.layer_bytes) == 18
    assert all(b > 0 for b in shape.layer_bytes)
    # Tied embeddings: the output layer is the token embedding copy (Q8_0, 640 x 262144).
    assert shape.output_bytes > 170 * MIB
    assert sum(shape.layer_bytes) + shape.output_bytes < gemma_gguf.stat().st_size
    assert (shape.n_embd, shape.n_head, shape.n_embd_kv, shape.n_vocab) == (640, 4, 256, 262144)
    assert kv_bytes_per_layer(shape, 1024, "f16") == 2 * 1024 * 256 * 2


def test_cpu_only_build_offloads_nothing(gemma_gguf):
    plan = resolve_offload(Settings(n_gpu_layers="auto"), gemma_gguf)  # this machine: no GPU backend
    assert plan.n_gpu_layers == 0 and plan.backend == "CPU" and plan.total_layers == 19


# A GPU this machine does not have, as ggml would report it.
BIG_GPU = Device("CUDA0", "NVIDIA H100 80GB HBM3", "GPU", free_bytes=79 * 1024 * MIB, total_bytes=80 * 1024 * MIB)


def test_auto_on_a_large_gpu_offloads_everything(gemma_gguf):
    plan = resolve_offload(Settings(n_ctx=4096), gemma_gguf, devices=[BIG_GPU])
    assert plan.n_gpu_layers == plan.total_layers == 19
    assert plan.backend == "CUDA" and plan.device == "NVIDIA H100 80GB HBM3" and plan.mode == "auto"


def test_vram_budget_makes_a_large_gpu_behave_like_a_small_one(gemma_gguf):
    s = Settings(n_ctx=4096, n_batch=512, vram_budget_mb=1100, vram_margin_mb=256)
    plan = resolve_offload(s, gemma_gguf, devices=[BIG_GPU])
    assert 0 < plan.n_gpu_layers < plan.total_layers
    assert plan.vram_free_mb == 1100
    assert plan.vram_planned_mb <= 1100 - 256


def test_fixed_counts_are_kept_and_minus_one_means_all(gemma_gguf):
    assert resolve_offload(Settings(n_gpu_layers=5), gemma_gguf, devices=[BIG_GPU]).n_gpu_layers == 5
    assert resolve_offload(Settings(n_gpu_layers=-1), gemma_gguf, devices=[BIG_GPU]).n_gpu_layers == 19


def test_fast_header_read_agrees_with_gguf_reader(tiny_llama_gguf):
    from gguf import GGUFReader

    from server.model.ggufinfo import read_gguf_info

    info = read_gguf_info(tiny_llama_gguf)
    reader = GGUFReader(str(tiny_llama_gguf))
    assert info.tensor_bytes == {t.name: int(t.n_bytes) for t in reader.tensors}
    assert info.metadata["general.architecture"] == "llama"
    assert info.metadata["tokenizer.ggml.tokens"] == len(reader.fields["tokenizer.ggml.tokens"].data)
