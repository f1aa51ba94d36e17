"""Our server on the GPU against llama.cpp's own tools: one results file and a table from a GPU run.

Reads what `run_device.sh wait` brought back (unpacked logs.tar.gz of bench/.work/gpu/: serve/*.json
from server_benches.sh serve-gpu/serve-split, side/*.json from side-by-side, gpu-concurrency.json,
profile-raw.txt, gpu-info.json; several runs may be given, later ones win), with the committed
llama-bench results as the per-layer-count reference, and writes bench/results/gpu-server.json:
the serve cases, the side-by-side single-stream check, the 8-client check, the profile's split
of the decode thread's time, and each issue target marked met or missed. Prints a Markdown table.

    python bench/gpu/summarize_server.py RUN_DIR [RUN_DIR ...] [--out bench/results/gpu-server.json] [--force]
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
TARGET = 0.95  # issue #5: single stream vs llama-bench tg128, and 8 clients vs llama-server with 8 slots


def load_runs(dirs: list[Path]) -> dict:
    found: dict = {"serve": {}, "side": {}}
    for d in dirs:
        for sub in ("serve", "side"):
            for f in sorted((d / sub).glob("*.json")):
                found[sub][f.stem] = json.loads(f.read_text())
        for name in ("gpu-concurrency.json", "gpu-info.json", "profile-raw.json"):
            if (d / name).exists():
                found[name] = json.loads((d / name).read_text())
        if (d / "profile-raw.txt").exists():
            found["profile"] = d / "profile-raw.txt"
    return found


def llama_bench_tg(records: list[dict]) -> dict:
    """(n_gpu_layers, flash_attn) -> tg128 t/s from the committed llama-bench run."""
    return {(r["n_gpu_layers"], r["flash_attn"]): r["avg_ts"] for r in records if r["n_gen"] == 128}


def serve_rows(serve: dict, tg: dict) -> list[dict]:
    rows = []
    for name, r in serve.items():
        off, fa = r.get("server_offload") or {}, r.get("flash_attn", "auto")
        layers, total = off.get("n_gpu_layers"), off.get("total_layers")
        # llama-bench's -ngl 99 is "all"; flash attention auto is on on CUDA. Partial offloads were
        # benched with it on at 16 layers only, so 8 and 0 compare with it off (said in the row).
        key_layers = 99 if layers == total else layers
        want = 0 if fa == "off" else 1
        ref_fa = want if (key_layers, want) in tg else 0
        ref = tg.get((key_layers, ref_fa))
        dec = r["medians"]["server"]["decode_tps"]
        rows.append(
            {
                "case": name,
                "n_gpu_layers": r["n_gpu_layers"],
                "vram_budget_mb": r.get("vram_budget_mb"),
                "flash_attn": fa,
                "repeat_penalty": r.get("repeat_penalty", 1.1),
                "tokens": r["tokens"],
                "reps": r["reps"],
                "layers_on_gpu": f"{layers}/{total}",
                "slots": (r.get("server_parallel") or {}).get("n_parallel"),
                "server_decode_tps": round(dec, 1),
                "server_ttft_ms": round(r["medians"]["server"]["ttft_ms"], 1),
                "llama_cpp_python_decode_tps": round(r["medians"]["in_process"]["decode_tps"], 1),
                "llama_bench_tg128": round(ref, 1) if ref else None,
                "llama_bench_fa": ref_fa if ref else None,
                "vs_llama_bench": round(dec / ref, 3) if ref else None,
            }
        )
    return rows


def side_by_side(side: dict) -> dict | None:
    lb = [r["avg_ts"] for k in ("llama-bench-before", "llama-bench-after") for r in side.get(k, [])]
    if not lb:
        return None
    ref = statistics.mean(lb)
    ours = {
        "repeat_penalty_" + k.removeprefix("serve-all-rp"): v["medians"]["server"]["decode_tps"]
        for k, v in side.items()
        if k.startswith("serve-all-")
    }
    return {
        "llama_bench_tg128_runs": [round(x, 1) for x in lb],
        "llama_bench_tg128_mean": round(ref, 1),
        "note": "llama-bench -ngl 99 -fa 1 -p 0 -n 128 -d 0,64 -r 5, before and after our two runs",
        "ours_decode_tps": {k: round(v, 1) for k, v in ours.items()},
        "ours_vs_llama_bench": {k: round(v / ref, 3) for k, v in ours.items()},
    }


def profile_split(raw: Path) -> dict:
    """Share of the engine thread's samples by what its innermost frame is doing."""
    leaves: collections.Counter = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if "llama-engine" in stack:
            leaves[stack.split(";")[-1]] += int(n)

    def kind(frame: str) -> str:
        name, _, where = frame.partition(" (")
        path, _, line = where.rstrip(")").rpartition(":")
        src = (REPO / path).read_text().splitlines()[int(line) - 1] if (REPO / path).is_file() else ""
        if "llama_get_logits_ith" in src:
            return "waiting for the GPU (llama_get_logits_ith synchronizes)"
        if "llama_decode" in src:
            return "llama_decode (graph build and launch)"
        return "Python between tokens (sampling, bookkeeping, events)"

    total = sum(leaves.values())
    split: collections.Counter = collections.Counter()
    for frame, n in leaves.items():
        split[kind(frame)] += n
    return {
        "engine_thread_samples": total,
        "share": {k: round(v / total, 3) for k, v in split.most_common()},
        "top_frames": {k: round(v / total, 3) for k, v in leaves.most_common(8)},
    }


def table(rows: list[dict]) -> str:
    out = [
        "| case | layers on GPU | slots | our server t/s | llama-bench tg128 | ours/llama-bench | llama-cpp-python t/s |",  # noqa: E501
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = (
            f"{r['llama_bench_tg128']} (fa {'on' if r['llama_bench_fa'] else 'off'})" if r["llama_bench_tg128"] else "-"
        )
        out.append(
            f"| {r['case']} | {r['layers_on_gpu']} | {r['slots']} | {r['server_decode_tps']} | {ref} | "
            f"{r['vs_llama_bench'] or '-'} | {r['llama_cpp_python_decode_tps']} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--llama-bench", type=Path, default=RESULTS / "gpu-llama-bench.json")
    p.add_argument("--out", type=Path, default=RESULTS / "gpu-server.json")
    p.add_argument("--force", action="store_true", help="overwrite an existing results file")
    a = p.parse_args(argv)
    if a.out.exists() and not a.force:
        p.error(f"{a.out} exists; pass --force to replace it")
    found, lb = load_runs(a.runs), json.loads(a.llama_bench.read_text())
    rows = serve_rows(found["serve"], llama_bench_tg(lb["records"]))
    conc = found.get("gpu-concurrency.json")
    at8 = (conc or {}).get("ratios_by_clients", {}).get("8", {}).get("ours-pN/llama-server-pN")
    side = side_by_side(found["side"])
    single = side["ours_vs_llama_bench"] if side else {}
    auto = [r for r in rows if r["n_gpu_layers"] == "auto"]
    result = {
        "benchmark": "our server on the GPU (issue #5)",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": found.get("gpu-info.json"),
        "model": lb["model"],
        "llama_cpp_commit": lb["llama_cpp_commit"],
        "serve": rows,
        "single_stream_side_by_side": side,
        "concurrency": {k: conc[k] for k in ("settings", "rows", "ratios_by_clients")} if conc else None,
        "profile": {**profile_split(found["profile"]), **(found.get("profile-raw.json") or {})}
        if "profile" in found
        else None,
        "targets": {
            "single_stream_vs_llama_bench_tg128": {
                "target": TARGET,
                "measured": single,
                "met": {k: v >= TARGET for k, v in single.items()},
            },
            "8_clients_vs_llama_server_8_slots": {
                "target": TARGET,
                "measured": at8,
                "met": at8 is not None and at8 >= TARGET,
            },
            "auto_always_loads": {"cases": [r["case"] for r in auto], "met": bool(auto)},
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + ".partial")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(a.out)
    print(table(rows))
    print(
        json.dumps(
            {
                "side_by_side": side,
                "targets": result["targets"],
                "profile": result["profile"] and result["profile"]["share"],
            },
            indent=1,
        )
    )
    print(f"results: {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
