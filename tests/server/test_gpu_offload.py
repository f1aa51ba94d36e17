"""`auto` offload on a real GPU: the CUDA build sees the device, and every plan loads and runs.

Needs llama.cpp built with a GPU backend (`make install-cuda`) and a 7B-shaped Q4_K_M file
(LLAMA_TEST_GPU_MODEL, else the Llama-2 file `make quantize` writes); skipped otherwise.
A 7B model is what makes the budgets bite: 2-6 GB hold only part of its 33 layers.
VRAM is read through ggml's device query before loading and after running; the
authoritative per-budget numbers come from bench/gpu/offload_check.py, one process per case.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from server.models import LLAMA2_FILE, MODELS_DIR
from server.offload import MIB, gpu_devices, kv_bytes_per_layer, read_model_shape, resolve_offload
from server.settings import Settings

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not llama_cpp.llama_supports_gpu_offload(),
                       reason="llama.cpp has no GPU backend in this build (make install-cuda builds one)"),
]
BUDGETS_MB = [2048, 4096, 6144]
N_CTX = 4096  # the server's default context


@pytest.fixture(scope="module")
def model_7b() -> Path:
    path = Path(os.environ.get("LLAMA_TEST_GPU_MODEL") or MODELS_DIR / LLAMA2_FILE)
    if not path.is_file():
        pytest.skip(f"no 7B-shaped GGUF at {path}: set LLAMA_TEST_GPU_MODEL (bench/gpu/prepare_model.py makes one)")
    return path


def plan_for(model: Path, budget_mb: int | None):
    return resolve_offload(Settings(n_gpu_layers="auto", n_ctx=N_CTX, vram_budget_mb=budget_mb), model)


def free_mib() -> int:
    return sum(d.free_bytes for d in gpu_devices()) // MIB


def test_cuda_build_offers_a_gpu_device():
    devices = gpu_devices()
    assert devices, "llama.cpp reports GPU offload support but lists no GPU device"
    for d in devices:
        assert d.kind in ("GPU", "IGPU") and d.name
        assert 0 < d.free_bytes <= d.total_bytes


def test_auto_without_budget_offloads_every_layer(model_7b):
    shape = read_model_shape(model_7b)
    need = (sum(shape.layer_bytes) + shape.output_bytes
            + len(shape.layer_bytes) * kv_bytes_per_layer(shape, N_CTX, 1)) // MIB + 2048
    if free_mib() < need:
        pytest.skip(f"this GPU has under {need} MiB free: not enough for the whole 7B model")
    plan = plan_for(model_7b, None)
    assert (plan.mode, plan.n_gpu_layers) == ("auto", plan.total_layers)
    assert plan.backend != "CPU" and plan.device


def test_larger_budgets_place_more_layers(model_7b):
    layers = [plan_for(model_7b, b).n_gpu_layers for b in BUDGETS_MB]
    total = plan_for(model_7b, None).total_layers
    assert 0 < layers[0] < layers[1] < layers[2] < total, layers


def run_prompt(llm, n_prompt: int = 256, n_gen: int = 8) -> np.ndarray:
    """Evaluate a prompt (one batch) then decode greedily token by token; return the last logits.

    Random weights may well pick end-of-text first, so decoding ignores it: the point is that
    both the batched and the one-token path run on this layer split.
    """
    text = " ".join(f"Question {i}: how do tides work?" for i in range(100))
    llm.eval(llm.tokenize(text.encode())[:n_prompt])
    for _ in range(n_gen):
        logits = np.asarray(llm.scores[llm.n_tokens - 1])
        llm.eval([int(np.argmax(logits))])
    return np.asarray(llm.scores[llm.n_tokens - 1])


@pytest.mark.parametrize("budget_mb", BUDGETS_MB)
def test_budgeted_plan_loads_runs_and_stays_within_budget(model_7b, budget_mb):
    plan = plan_for(model_7b, budget_mb)
    assert 0 < plan.n_gpu_layers < plan.total_layers
    assert plan.vram_planned_mb <= budget_mb
    before = free_mib()
    llm = llama_cpp.Llama(str(model_7b), n_gpu_layers=plan.n_gpu_layers, n_ctx=N_CTX, n_batch=512,
                          verbose=False)
    try:
        logits = run_prompt(llm)
        used = before - free_mib()
    finally:
        llm.close()
    assert np.isfinite(logits).all()
    # What llama.cpp really took (weights, KV cache, compute buffers) must fit the budget,
    # and auto should use most of it, not leave a laptop GPU half empty.
    assert used <= budget_mb, f"{plan.n_gpu_layers} layers used {used} MiB of a {budget_mb} MiB budget"
    assert used >= budget_mb // 2, f"{plan.n_gpu_layers} layers used only {used} MiB of {budget_mb} MiB"
