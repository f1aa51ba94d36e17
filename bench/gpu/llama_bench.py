"""llama.cpp's own llama-bench on the GPU: the reference the server is measured against.

Runs pp512 and tg128 on one GGUF file at several -ngl values (99 = all layers, 16 and 8
for a laptop-sized GPU, 0 = none) with flash attention off and on where it matters, and
writes bench/results/gpu-llama-bench.json with the GPU, driver and CUDA version, the build
time, and llama-bench's own JSON records. Prints a table last.

    python bench/gpu/llama_bench.py --bin build/bin/llama-bench --model m.gguf [--force]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _gpuinfo import gpu_info  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results" / "gpu-llama-bench.json"
# (ngl list, flash-attn list, repetitions): all layers and 16 on GPU get both attention paths
# and 5 reps; the slow CPU-heavy settings get 3 reps so the run stays within minutes.
RUNS = [("99,16", "0,1", 5), ("8,0", "0", 3)]
KEEP = (
    "n_gpu_layers",
    "flash_attn",
    "n_prompt",
    "n_gen",
    "n_threads",
    "n_batch",
    "n_ubatch",
    "avg_ts",
    "stddev_ts",
    "samples_ts",
    "model_size",
    "model_n_params",
    "build_commit",
    "build_number",
    "gpu_info",
    "cpu_info",
    "backends",
    "type_k",
    "type_v",
)


def run_bench(binary: Path, model: Path, ngl: str, fa: str, reps: int, raw: Path | None) -> list[dict]:
    argv = [
        str(binary),
        "-m",
        str(model),
        "-ngl",
        ngl,
        "-fa",
        fa,
        "-p",
        "512",
        "-n",
        "128",
        "-r",
        str(reps),
        "-o",
        "json",
    ]
    print("+", " ".join(argv), flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=420)
    if raw:
        (raw / f"ngl{ngl.replace(',', '_')}-fa{fa.replace(',', '_')}.json").write_text(proc.stdout)
        (raw / f"ngl{ngl.replace(',', '_')}-fa{fa.replace(',', '_')}.stderr").write_text(proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"llama-bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return [{k: r.get(k) for k in KEEP} for r in json.loads(proc.stdout)]


def table(records: list[dict]) -> str:
    rows = {}
    for r in records:
        test = "pp512" if r["n_prompt"] else "tg128"
        rows.setdefault((r["n_gpu_layers"], r["flash_attn"]), {})[test] = (r["avg_ts"], r["stddev_ts"])
    lines = [f"{'ngl':>4} {'fa':>3} {'pp512 t/s':>16} {'tg128 t/s':>14}"]
    for (ngl, fa), t in sorted(rows.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        pp, tg = t.get("pp512", (0, 0)), t.get("tg128", (0, 0))
        lines.append(f"{ngl:>4} {int(fa):>3} {pp[0]:>9.1f} ±{pp[1]:>5.1f} {tg[0]:>7.1f} ±{tg[1]:>4.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bin", type=Path, required=True, help="llama-bench built with CUDA")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--build", type=Path, help="build.json from run_device.sh (build time)")
    p.add_argument("--commit", type=Path, help="file holding the vendored llama.cpp commit")
    p.add_argument("--raw", type=Path, help="folder for llama-bench's raw output")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--force", action="store_true", help="overwrite an existing results file")
    a = p.parse_args(argv)
    if a.out.exists() and not a.force:
        p.error(f"{a.out} exists; pass --force to replace it")
    records = []
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    for ngl, fa, reps in RUNS:
        records += run_bench(a.bin, a.model, ngl, fa, reps, a.raw)
    result = {
        "benchmark": "llama-bench",
        "when": started,
        "machine": gpu_info(),
        "model": {
            "file": a.model.name,
            "bytes": a.model.stat().st_size,
            "made_by": "bench/gpu/prepare_model.py (random weights, Llama-2-7B shapes, our converter + quantizer)",
        },
        "llama_cpp_commit": a.commit.read_text().strip() if a.commit and a.commit.exists() else None,
        "build": json.loads(a.build.read_text()) if a.build and a.build.exists() else None,
        "runs": [{"ngl": n, "flash_attn": f, "reps": r} for n, f, r in RUNS],
        "records": records,
    }
    tmp = a.out.with_name(a.out.name + ".partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(a.out)
    print(table(records))
    print(f"results: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
