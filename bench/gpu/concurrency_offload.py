"""Concurrency at partial offload: bench/concurrency.py once per N_GPU_LAYERS setting, ours vs llama-server.

The all-layers run is bench/results/gpu-concurrency.json; this driver fills in the other rows of the
offload table (issue #5) with a small workload, so that every setting fits in one short GPU lease:

    python bench/gpu/concurrency_offload.py --model M.gguf --llama-server build/bin/llama-server \
        --layers 16,8,0,auto --copy-to DIR

Each setting is one concurrency.py run (servers started, measured side by side, stopped), written to
OUT_DIR/gpu-concurrency-offload-<setting>.json as soon as it ends, with the layer count our server
chose (from its start-up log line) added; then the summary gpu-concurrency-offload.json. Settings run
in the order given: put the fastest first, so a run cut short still leaves results. `auto` runs ours
only (llama-server takes a layer count); concurrency.py's --n-gpu-layers is a number, so for `auto`
our server's N_GPU_LAYERS is set to `auto` in its environment instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import concurrency  # noqa: E402  (bench/concurrency.py, the benchmark itself)

OFFLOAD_LINE = re.compile(r"offload \((\w+)\): (\d+)/(\d+) layers on GPU, backend (\S+), device (.*?), VRAM")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--layers", default="16,8,0,auto", help="comma list of layer counts and/or auto")
    ap.add_argument("--llama-server", type=Path, help="llama-server binary to link where concurrency.py looks")
    ap.add_argument("--parallel", default="8")
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--requests", default="1")
    ap.add_argument("--rounds", default="1")
    ap.add_argument("--max-tokens", default="64")
    ap.add_argument("--threads", default=str(os.cpu_count() or 2))
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / ".work" / "gpu" / "offload-concurrency")
    ap.add_argument("--copy-to", type=Path, help="also copy each result here as soon as it is written")
    ap.add_argument("--gpu-info", type=Path, help="JSON describing the GPU, kept in the summary")
    ap.add_argument("--force", action="store_true", help="overwrite results in --out-dir")
    return ap.parse_args(argv)


def link_llama_server(binary: Path) -> None:
    # concurrency.py builds a CPU llama-server where none is linked: on the GPU machine it must find
    # the CUDA one from the same build as the library (as server_benches.sh links it).
    concurrency.LLAMA_SERVER.parent.mkdir(parents=True, exist_ok=True)
    concurrency.LLAMA_SERVER.unlink(missing_ok=True)
    concurrency.LLAMA_SERVER.symlink_to(binary.resolve())


def ours_with_offload(target: concurrency.Target, setting: str) -> concurrency.Target:
    """Our server started with N_GPU_LAYERS=auto, whatever number concurrency.py passes."""
    if setting != "auto":
        return target

    def command(model, port, a):
        argv, env = target.command(model, port, a)
        return argv, {**env, "LLAMA_SERVER_N_GPU_LAYERS": "auto"}

    return dataclasses.replace(target, command=command)


def ours_offload(log: Path) -> dict | None:
    """What our server chose, from its start-up log line (the server is gone by now)."""
    m = OFFLOAD_LINE.search(log.read_text(errors="replace")) if log.exists() else None
    if not m:
        return None
    return {"mode": m[1], "n_gpu_layers": int(m[2]), "total_layers": int(m[3]), "backend": m[4], "device": m[5]}


def run_one(setting: str, a: argparse.Namespace) -> Path | None:
    out = a.out_dir / f"gpu-concurrency-offload-{'auto' if setting == 'auto' else 'ngl' + setting}.json"
    servers = "ours-pN" if setting == "auto" else "ours-pN,llama-server-pN"
    argv = [
        "--model",
        str(a.model),
        "--servers",
        servers,
        "--parallel",
        a.parallel,
        "--clients",
        a.clients,
        "--requests",
        a.requests,
        "--rounds",
        a.rounds,
        "--max-tokens",
        a.max_tokens,
        "--threads",
        a.threads,
        "--n-gpu-layers",
        "-1" if setting == "auto" else setting,
        "--no-plot",
        "--out",
        str(out),
    ]
    print(f"== n_gpu_layers {setting}: concurrency.py {' '.join(argv)}", flush=True)
    if concurrency.main(argv + (["--force"] if a.force else [])) != 0:
        return None
    doc = json.loads(out.read_text())
    doc["settings"]["n_gpu_layers"] = "auto" if setting == "auto" else int(setting)
    doc["ours_offload"] = ours_offload(concurrency.WORK / "ours-pN.log")
    for name in servers.split(","):  # keep each setting's server logs; concurrency.py reuses the names
        log = concurrency.WORK / f"{name}.log"
        if log.exists():
            shutil.copy(log, a.out_dir / f"{name}-{setting}.log")
    concurrency.write_atomic(out, json.dumps(doc, indent=1).encode())
    return out


def summarize(paths: list[Path], a: argparse.Namespace) -> dict:
    table = []
    for p in paths:
        doc = json.loads(p.read_text())
        rows = {(r["server"], r["clients"]): r for r in doc["rows"]}
        for c in doc["settings"]["clients"]:
            ours, ref = rows.get(("ours-pN", c), {}), rows.get(("llama-server-pN", c), {})
            tps, ref_tps = ours.get("tokens_per_s"), ref.get("tokens_per_s")
            # Tokens and wall too: an answer that stops early (end of sequence) lowers a column's
            # aggregate while its round's wall time is still set by the longest answer.
            table.append(
                {
                    "n_gpu_layers": doc["settings"]["n_gpu_layers"],
                    "ours_layers_on_gpu": (doc["ours_offload"] or {}).get("n_gpu_layers"),
                    "clients": c,
                    "ours_pN": tps,
                    "llama_server_pN": ref_tps,
                    "ratio": round(tps / ref_tps, 3) if tps and ref_tps else None,
                    "tokens": [ours.get("completion_tokens"), ref.get("completion_tokens")],
                    "wall_s": [ours.get("wall_s"), ref.get("wall_s")],
                }
            )
    gpu = json.loads(a.gpu_info.read_text()) if a.gpu_info and a.gpu_info.exists() else None
    return {
        "gpu": gpu,
        "files": [p.name for p in paths],
        "columns": {"tokens": ["ours-pN", "llama-server-pN"], "wall_s": ["ours-pN", "llama-server-pN"]},
        "table": table,
    }


def print_table(table: list[dict]) -> None:
    print(
        f"{'layers':>6} {'ours on GPU':>11} {'clients':>7} {'ours-pN':>9} {'llama-srv':>9} {'ratio':>6}  tokens    wall s"  # noqa: E501
    )
    for r in table:
        print(
            f"{r['n_gpu_layers']!s:>6} {r['ours_layers_on_gpu']!s:>11} {r['clients']:>7} {r['ours_pN']!s:>9} "
            f"{r['llama_server_pN']!s:>9} {r['ratio']!s:>6}  {r['tokens']}  {r['wall_s']}"
        )


def publish(path: Path, a: argparse.Namespace) -> None:
    if a.copy_to:
        a.copy_to.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, a.copy_to / path.name)


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    if a.llama_server:
        link_llama_server(a.llama_server)
    settings = [s.strip() for s in a.layers.split(",") if s.strip()]
    done: list[Path] = []
    ours = concurrency.TARGETS["ours-pN"]
    for setting in settings:
        concurrency.TARGETS["ours-pN"] = ours_with_offload(ours, setting)
        path = run_one(setting, a)
        if path is None:
            print(f"n_gpu_layers {setting}: no result", file=sys.stderr)
            continue
        done.append(path)
        publish(path, a)
    summary = a.out_dir / "gpu-concurrency-offload.json"
    concurrency.write_atomic(summary, json.dumps(summarize(done, a), indent=1).encode())
    publish(summary, a)
    print_table(json.loads(summary.read_text())["table"])
    return 0 if len(done) == len(settings) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
