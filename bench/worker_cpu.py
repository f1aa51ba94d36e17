"""What the server's own gunicorn worker costs per request, against gunicorn's plain gthread worker.

server/http/worker.py reads each request in the worker's event loop before a thread
takes it. Throughput on a shared 2-core machine swings too much to show a cost of
a millisecond or less, so this measures it directly: the worker process's CPU time
(every thread, from /proc) per request, for requests that do not reach the model:
  health     GET /api/health on a new connection each time (as most clients do)
  body-500k  POST /api/respond with a 500 kB body the app refuses (400): the body
             is read in the event loop, in 64 kB pieces
Both servers run side by side on the same model; rounds alternate between them.

    python bench/worker_cpu.py [--rounds 6] [--requests 300]
Results: bench/results/worker-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
WORKERS = {"ours": [], "gthread": ["--worker-class", "gthread"]}
BODY = b'{"query": 5, "pad": "' + b"x" * 500_000 + b'"}'  # refused: query must be a string


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system time of every thread of `pid` so far."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start(name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "LLAMA_SERVER_MODEL": str(MODEL),
        "LLAMA_SERVER_PORT": str(port),
        "LLAMA_SERVER_N_THREADS": "1",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", *WORKERS[name]]
    proc = subprocess.Popen(
        [*command, "server.http.app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/api/health", timeout=5).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(1)
    proc.kill()
    sys.exit(f"{name}: the server did not become ready")


def worker_pid(master: int) -> int:
    return int(Path(f"/proc/{master}/task/{master}/children").read_text().split()[0])


KINDS = {
    "health": lambda base: requests.get(base + "/api/health", timeout=30).status_code == 200,
    "body-500k": lambda base: requests.post(
        base + "/api/respond", data=BODY, headers={"Content-Type": "application/json"}, timeout=30
    ).status_code
    == 400,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--requests", type=int, default=300)
    a = ap.parse_args()
    servers = {name: start(name) for name in WORKERS}
    ms: dict[str, dict[str, list[float]]] = {n: {k: [] for k in KINDS} for n in servers}
    try:
        for r in range(a.rounds):
            for name in list(servers) if r % 2 == 0 else list(servers)[::-1]:
                proc, base = servers[name]
                pid = worker_pid(proc.pid)
                for kind, ask in KINDS.items():
                    before = cpu_seconds(pid)
                    assert all(ask(base) for _ in range(a.requests)), f"{name}: unexpected answer to {kind}"
                    ms[name][kind].append((cpu_seconds(pid) - before) / a.requests * 1000)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    summary = {
        n: {
            k: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
            for k, v in d.items()
        }
        for n, d in ms.items()
    }
    print(f"\nworker CPU ms per request, median (min-max) of {a.rounds} rounds of {a.requests}")
    print(f"{'worker':10}" + "".join(f"{k:>24}" for k in KINDS))
    for n, d in summary.items():
        print(f"{n:10}" + "".join(f"{s['median']:>10.3f} ({s['min']:.2f}-{s['max']:.2f})" for s in d.values()))
    out = ROOT / "bench" / "results" / "worker-cpu.json"
    doc = {
        "command": "python bench/worker_cpu.py " + " ".join(sys.argv[1:]),
        "host": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "summary_ms_per_request": summary,
        "rounds_ms_per_request": ms,
    }
    tmp = out.with_name(out.name + ".partial")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
