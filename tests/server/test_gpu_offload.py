"""`auto` offload on a real GPU: the CUDA build sees the device, and every plan loads and runs.

Needs llama.cpp built with a GPU backend (`make install-cuda`) and a 7B-shaped Q4_K_M file
(LLAMA_TEST_GPU_MODEL, else the Llama-2 file `make quantize` writes); skipped otherwise.
A 7B model is what makes the budgets bite: 2-6 GB hold only part of its 33 layers.
VRAM is read through ggml's device query before loading and after running; the
authoritative per-budget numbers come from bench/gpu/offload_check.py, one process per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.model.files import LLAMA2_FILE, MODELS_DIR
from server.model.offload import MIB, gpu_devices, kv_bytes_per_layer, read_model_shape, resolve_offload
from server.settings import Settings

llama_cpp = pytest.importorskip("llama_cpp")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not llama_cpp.llama_supports_gpu_offload(),
        reason="llama.cpp has no GPU backend in this build (make install-cuda builds one)",
    ),
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
    need = (
        sum(shape.layer_bytes) + shape.output_bytes + len(shape.layer_bytes) * kv_bytes_per_layer(shape, N_CTX, "f16")
    ) // MIB + 2048
    if free_mib() < need:
        pytest.skip(f"this GPU has under {need} MiB free: not enough for the whole 7B model")
    plan = plan_for(model_7b, None)
    assert (plan.mode, plan.n_gpu_layers) == ("auto", plan.total_layers)
    assert plan.backend != "CPU" and plan.device


def test_larger_budgets_place_more_layers(model_7b):
    layers = [plan_for(model_7b, b).n_gpu_layers for b in BUDGETS_MB]
    total = plan_for(model_7b, None).total_layers
    assert 0 < layers[0] < layers[1] < layers[2] < total, layers


# Loads run in a fresh interpreter that imports llama_cpp before anything else, for two
# reasons: each case's VRAM is then measured from a clean device (no pool memory kept from
# an earlier load), and on the CUDA build (H100 machine) a process that had loaded numpy or
# sentencepiece before llama_cpp segfaulted in llama_model_load_from_file, at any layer
# count; the tests' conftest imports both through the tiny-Llama fixtures.
LOAD_AND_RUN = """
import llama_cpp  # first: before numpy or any other C++ extension (see above)
import json, sys
import numpy as np
from server.model.offload import MIB, gpu_devices

def free_mib():
    return sum(d.free_bytes for d in gpu_devices()) // MIB

model, n_layers = sys.argv[1], int(sys.argv[2])
before = free_mib()
llm = llama_cpp.Llama(model, n_gpu_layers=n_layers, n_ctx=4096, n_batch=512, verbose=False)
text = " ".join(f"Question {i}: how do tides work?" for i in range(100))
llm.eval(llm.tokenize(text.encode())[:256])  # one batch: the compute buffers reach full size
for _ in range(8):  # then the one-token path; random weights may pick end-of-text, so ignore it
    llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
finite = bool(np.isfinite(llm.scores[llm.n_tokens - 1]).all())
print(json.dumps({"used_mib": before - free_mib(), "finite": finite}))
"""


def run_fresh(script: str, *args: str, what: str) -> dict:
    """Run `script` in a fresh interpreter (see above); the JSON of its last output line."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}): {proc.stderr[-1500:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def load_and_run(model: Path, n_layers: int) -> dict:
    return run_fresh(LOAD_AND_RUN, str(model), str(n_layers), what=f"loading {n_layers} layers")


@pytest.mark.parametrize("budget_mb", BUDGETS_MB)
def test_budgeted_plan_loads_runs_and_stays_within_budget(model_7b, budget_mb):
    plan = plan_for(model_7b, budget_mb)
    assert 0 < plan.n_gpu_layers < plan.total_layers
    assert plan.vram_planned_mb <= budget_mb
    got = load_and_run(model_7b, plan.n_gpu_layers)
    assert got["finite"]
    # What llama.cpp really took (weights, KV cache, compute buffers) must fit the budget,
    # and auto should use most of it, not leave a laptop GPU half empty.
    used = got["used_mib"]
    assert used <= budget_mb, f"{plan.n_gpu_layers} layers used {used} MiB of a {budget_mb} MiB budget"
    assert used >= budget_mb // 2, f"{plan.n_gpu_layers} layers used only {used} MiB of {budget_mb} MiB"


# The RAM prompt cache copies a slot's KV state out of the GPU and back in (server/engine/promptcache.py).
# In a fresh interpreter, for the reason given above LOAD_AND_RUN.
PROMPT_CACHE_RUN = """
import llama_cpp  # first
import json, sys
from server.engine.batching import BatchDecoder, Delta, SamplingParams

decoder = BatchDecoder.load(sys.argv[1], n_parallel=1, n_ctx_per_seq=512, n_threads=4, n_gpu_layers=-1)

def ask(text):
    events = []
    decoder.add(decoder.tokenize(text), SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=16),
                events.append)
    decoder.run_until_idle()
    return "".join(e.text for e in events if isinstance(e, Delta)), events[-1].usage.cached_tokens

a = "You are a helpful assistant. " * 8 + "Why is the sea salty?"
ask(a)
# Reused from the slot's own cells: all but the last prompt token cached, that one decoded
# alone. (Not compared with the first answer: a lone token takes other kernels than a whole
# prompt, and random weights are full of near-ties that this can flip.)
reused, _ = ask(a)
ask("Once upon a time, in a land far away, there lived a dragon.")  # takes the only slot
again, cached = ask(a)  # a's state comes back from RAM into the GPU's KV cache
print(json.dumps({"same": reused == again, "cached": cached, "n_prompt": len(decoder.tokenize(a)),
                  "hits": decoder.stats().prompt_cache_hits}))
"""


def test_prompt_cache_restores_a_state_into_the_gpu_kv_cache(model_7b):
    got = run_fresh(PROMPT_CACHE_RUN, str(model_7b), what="the prompt-cache run")
    assert got["hits"] == 1 and got["cached"] == got["n_prompt"] - 1
    assert got["same"]  # the restored cells answer as the slot's own cells did
