"""Capacity of replicas behind nginx on one machine: aggregate tokens/s and p95 latency.

Configurations, all serving the same model with PARALLEL slots per replica:
  direct-1   one replica, no nginx (`python -m server`): the baseline
  nginx-N    `python -m deploy.cluster --replicas N` (what `make cluster` runs), N = 1, 2, 4
Threads: the cores are shared out, N_THREADS = max(1, cores // N) per replica (the launcher's
default), so N replicas never ask for more threads than there are cores, except where N
exceeds the cores (one thread each). Each client sends --requests questions one after another
(greedy, --max-tokens, plain answers through /api/respond); every round's questions carry a
new tag, so no replica answers a repeated prompt from its cache. All configurations are
started first and stay up (an idle replica costs no CPU); then --rounds times, for each
client count, every configuration gets its round in turn (the order rotating), so load from
anything else on the machine falls on all of them alike. Medians over the rounds, with the
min and max.

    python bench/cluster.py                      # 1, 2, 4 replicas; 1, 4, 8, 16 clients
    python bench/cluster.py --replicas 1,2 --clients 8 --rounds 1 --out /tmp/quick.json
    python bench/cluster.py --replicas '' --parallel 8   # direct-1 alone, no nginx needed

Results: bench/results/cluster-cpu.json (refuses to overwrite without --force).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from concurrency import PIN, TARGETS, free_port, run_round, stop_on_sigterm, wait_ready, write_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
from deploy.cluster import NGINX  # noqa: E402
from server.model.files import resolve_model  # noqa: E402
from server.settings import physical_cores  # noqa: E402


def free_ports(count: int) -> int:
    """A port P such that P..P+count-1 are free on loopback now."""
    for _ in range(100):
        base = free_port()
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    stack.enter_context(socket.create_server(("127.0.0.1", port)))
                return base
            except OSError:
                continue
    raise RuntimeError(f"no {count} consecutive free ports")


class Config:
    """One configuration, started: a single server or the cluster launcher with its replicas."""

    def __init__(self, replicas: int | None, args, run_dir: Path):
        self.name = f"nginx-{replicas}" if replicas else "direct-1"
        self.replicas = replicas or 1
        self.threads = max(1, physical_cores() // self.replicas)
        port = free_ports(self.replicas + 1)
        env = {
            **os.environ,
            "LLAMA_SERVER_MODEL": str(args.model),
            "LLAMA_SERVER_PARALLEL": str(args.parallel),
            "LLAMA_SERVER_N_CTX": str(args.ctx),
            "LLAMA_SERVER_N_THREADS": str(self.threads),
            "LLAMA_SERVER_PORT": str(port),
        }
        if replicas:
            command = [
                sys.executable,
                "-m",
                "deploy.cluster",
                "--replicas",
                str(replicas),
                "--run-dir",
                str(run_dir / self.name),
            ]
        else:
            command = [sys.executable, "-m", "server"]
        self.log = open(run_dir / f"{self.name}.log", "w")  # noqa: SIM115 - open while the config runs
        self.proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"

    def wait(self) -> None:
        if self.name != "direct-1":
            state = Path(self.log.name).with_name(self.name) / "state.json"
            deadline = time.monotonic() + 300
            while not (state.exists() and all(r["ready"] for r in json.loads(state.read_text())["replicas"])):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} did not start; see {self.log.name}")
                time.sleep(0.5)
        wait_ready(self.base + "/api/health", self.proc)
        time.sleep(1)  # nginx has reloaded with every replica

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3)}


def summarize(raw: list[dict], configs: list[Config], clients: list[int]) -> list[dict]:
    rows = []
    for cfg in configs:
        for c in clients:
            runs = [r for r in raw if r["config"] == cfg.name and r["clients"] == c]
            rows.append(
                {
                    "config": cfg.name,
                    "replicas": cfg.replicas,
                    "threads_per_replica": cfg.threads,
                    "clients": c,
                    "rounds": len(runs),
                    "requests": sum(r["requests"] for r in runs),
                    "errors": sum(r["errors"] for r in runs),
                    "tokens_per_s": spread([r["tokens_per_s"] for r in runs]),
                    "p50_s": spread([r["p50_s"] for r in runs]),
                    "p95_s": spread([r["p95_s"] for r in runs]),
                }
            )
    return rows


def print_table(rows: list[dict], clients: list[int]) -> None:
    print("\naggregate tokens/s (p95 latency s) by concurrent clients, medians over rounds")
    print(f"{'config':10}{'threads':>8}" + "".join(f"{c:>16}" for c in clients))
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]
        cells = {r["clients"]: f"{r['tokens_per_s']['median']:.1f} ({r['p95_s']['median']:.2f})" for r in mine}
        print(f"{name:10}{mine[0]['threads_per_replica']:>8}" + "".join(f"{cells[c]:>16}" for c in clients))


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: the server's default model)")
    ap.add_argument("--replicas", default="1,2,4", type=lambda t: [int(c) for c in t.split(",") if c])
    ap.add_argument("--no-direct", action="store_true", help="skip the direct-1 baseline")
    ap.add_argument("--clients", default="1,4,8,16", type=lambda t: [int(c) for c in t.split(",")])
    ap.add_argument("--parallel", type=int, default=4, help="slots per replica")
    ap.add_argument("--requests", type=int, default=4, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--out", type=Path, default=RESULTS / "cluster-cpu.json")
    ap.add_argument("--force", action="store_true", help="overwrite existing results")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; rerun with --force to replace it (or --out elsewhere)", file=sys.stderr)
        return 1
    if args.replicas and not Path(NGINX).exists():
        print(f"needs nginx at {NGINX} (make deploy-tools)", file=sys.stderr)
        return 2
    args.model = (args.model or resolve_model(None).path).resolve()
    target, load_before = TARGETS["ours-pN"], os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        configs = [Config(n, args, Path(tmp)) for n in ([] if args.no_direct else [None]) + args.replicas]
        raw = []
        try:
            for cfg in configs:
                cfg.wait()
            for r in range(args.rounds):
                for c in args.clients:
                    order = configs[r % len(configs) :] + configs[: r % len(configs)]
                    for cfg in order:
                        result = run_round(target, cfg.base, c, args.requests, args.max_tokens, tag=f"({r}.{c}) ")
                        # Others' load on the machine during this round, to judge it by.
                        raw.append({"config": cfg.name, "round": r, **result, "loadavg_1m": os.getloadavg()[0]})
                        print(
                            f"round {r + 1}/{args.rounds} {cfg.name:9} {c:>2} clients: "
                            f"{result['tokens_per_s']:7.1f} tokens/s, p95 {result['p95_s']:.2f} s",
                            flush=True,
                        )
        finally:
            for cfg in configs:
                cfg.close()
    rows = summarize(raw, configs, args.clients)
    print_table(rows, args.clients)
    doc = {
        "command": "python bench/cluster.py " + " ".join(argv),
        "model": args.model.name,
        "model_bytes": args.model.stat().st_size,
        "llama_cpp_python": PIN,
        "nginx": subprocess.run([NGINX, "-v"], capture_output=True, text=True, check=False).stderr.strip()
        if args.replicas
        else None,
        "host": {
            "cpus": os.cpu_count(),
            "physical_cores": physical_cores(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k in ("replicas", "clients", "parallel", "requests", "rounds", "max_tokens", "ctx")
        },
        "rows": rows,
        "rounds": raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, json.dumps(doc, indent=1).encode())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
