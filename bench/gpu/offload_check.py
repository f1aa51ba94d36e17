"""Does `auto` offload fit? Plan, load, run, and measure the VRAM really used, per budget.

For each case (LLAMA_SERVER_VRAM_BUDGET_MB none, 2048, 4096, 6144; one slot, and four slots
as the server's `auto` parallelism plans them: the offload plan made for N slots x N_CTX),
a fresh process asks server.model.offload for the plan, loads the model with llama-cpp-python at
that layer count, evaluates a 500-token prompt (a full n_batch, so the compute buffers reach
their size) and generates 32 tokens. VRAM used = free before load - least free after
(ggml's device query; nvidia-smi's count is recorded beside it). Writes
bench/results/gpu-offload.json and prints a table.

    python bench/gpu/offload_check.py --model m.gguf [--force]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from _gpuinfo import gpu_info, used_mib  # noqa: E402

RESULTS = REPO / "bench" / "results" / "gpu-offload.json"
CASES = [(None, 1), (2048, 1), (4096, 1), (6144, 1), (None, 4), (4096, 4), (6144, 4)]  # (budget MiB, slots)
PROMPT_TOKENS, GEN_TOKENS = 500, 32


def free_mib() -> int:
    from server.model.offload import MIB, gpu_devices

    return sum(d.free_bytes for d in gpu_devices()) // MIB


def one(model: Path, budget: int | None, slots: int) -> dict:
    """Run one case in this process; returns its measurements."""
    # llama_cpp before numpy: on the CUDA build a process that loaded numpy first
    # segfaulted in llama_model_load_from_file (H100 machine, any layer count).
    from llama_cpp import Llama

    from server.model.offload import resolve_offload
    from server.settings import Settings

    settings = Settings(n_gpu_layers="auto", vram_budget_mb=budget)
    plan = resolve_offload(replace(settings, n_ctx=settings.n_ctx * slots), model)
    before, smi_before = free_mib(), used_mib()
    t0 = time.perf_counter()
    llm = Llama(
        str(model),
        n_gpu_layers=plan.n_gpu_layers,
        n_ctx=settings.n_ctx * slots,
        n_batch=settings.n_batch,
        n_threads=settings.n_threads,
        flash_attn=settings.flash_attn,
        verbose=False,
    )
    load_s = time.perf_counter() - t0
    after_load = free_mib()
    text = " ".join(f"Question {i}: why is the sky blue and how do tides work?" for i in range(200))
    prompt = llm.tokenize(text.encode())[:PROMPT_TOKENS]
    t0 = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=GEN_TOKENS, temperature=0.0)
    run_s = time.perf_counter() - t0
    after_run, smi_after = free_mib(), used_mib()
    used = before - min(after_load, after_run)
    return {
        "budget_mb": budget,
        "slots": slots,
        "n_ctx": settings.n_ctx * slots,
        "plan": plan.as_dict(),
        "free_before_mib": before,
        "used_after_load_mib": before - after_load,
        "used_after_run_mib": before - after_run,
        "used_mib": used,
        "nvidia_smi_delta_mib": (smi_after - smi_before) if smi_before is not None else None,
        "within_budget": budget is None or used <= budget,
        "budget_share": round(used / budget, 3) if budget else None,
        "generated_tokens": out["usage"]["completion_tokens"],
        "load_s": round(load_s, 2),
        "prompt_plus_gen_s": round(run_s, 2),
    }


def run_case(model: Path, budget: int | None, slots: int) -> dict:
    argv = [sys.executable, __file__, "--model", str(model), "--one", str(budget or 0), str(slots)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:  # a failed load is a finding, not a crash of the whole check
        return {"budget_mb": budget, "slots": slots, "error": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = [f"{'budget':>7} {'slots':>5} {'layers':>7} {'planned':>8} {'used':>6} {'share':>6} {'fits':>5}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['budget_mb'] or '-':>7} {r['slots']:>5}  FAILED: {r['error'].splitlines()[-1][:60]}")
            continue
        p = r["plan"]
        lines.append(
            f"{r['budget_mb'] or '-':>7} {r['slots']:>5} {p['n_gpu_layers']:>3}/{p['total_layers']:<3} "
            f"{p['vram_planned_mb']:>8} {r['used_mib']:>6} {r['budget_share'] or '-':>6} "
            f"{'yes' if r['within_budget'] else 'NO':>5}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--one", nargs=2, type=int, metavar=("BUDGET", "SLOTS"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--force", action="store_true", help="overwrite an existing results file")
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.model, a.one[0] or None, a.one[1])))
        return 0
    if a.out.exists() and not a.force:
        p.error(f"{a.out} exists; pass --force to replace it")
    rows = [run_case(a.model, b, s) for b, s in CASES]
    result = {
        "benchmark": "auto offload fit",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": gpu_info(),
        "model": a.model.name,
        "prompt_tokens": PROMPT_TOKENS,
        "gen_tokens": GEN_TOKENS,
        "cases": rows,
    }
    tmp = a.out.with_name(a.out.name + ".partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(a.out)
    print(table(rows))
    print(f"results: {a.out}")
    return 0 if all(r.get("within_budget") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
