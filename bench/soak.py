"""Soak test: minutes of mixed traffic against real gunicorn, watching for 5xx and memory growth.

Starts the server as `make serve` does (gunicorn, server/gunicorn.conf.py) on a loopback
port and runs --clients client threads that each pick a kind of request at random
(bench/_soak_traffic.py: fresh long prompts, repeated prompts the RAM prompt cache
restores, streams, cancelled streams, clients that hang up on a plain answer,
context overflows, malformed and oversized bodies, bursts above PARALLEL +
QUEUE_SIZE). Every --sample-s seconds it records the worker's and the master's RSS
and the prompt cache's use from /api/health, and rewrites the results file, so a
run cut short still leaves its data.

The verdict: no server error (a 5xx other than the 503 `queue_full` a burst above
the queue is meant to get), no unexpected answer, and the worker's RSS over the last
five minutes within 5% of its RSS over the first five minutes once the prompt cache
was full (with the cache off: once warmed up, after --warmup-s); medians of each.

    python bench/soak.py --minutes 60 --label cache-on
    python bench/soak.py --minutes 20 --cache-ram 0 --label cache-off
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _soak_traffic import KINDS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
GROWTH_LIMIT = 0.05
CACHE_FULL = 0.9  # the cache counts as full once it holds this share of its limit
WINDOW_S = 300  # growth compares the median RSS of the first and the last this many seconds


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=60)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "gemma-3-270m-q4_k_m.gguf")
    p.add_argument("--cache-ram", default="auto", help="LLAMA_SERVER_CACHE_RAM: auto, MiB, or 0 (off)")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--queue-size", type=int, default=4)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: kind to a shared machine)")
    p.add_argument("--sample-s", type=float, default=10)
    p.add_argument("--warmup-s", type=float, default=300, help="with the cache off: when growth starts to count")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--label", default="cache-on")
    return p.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """Resident memory of `pid`: VmRSS in all, or RssAnon (the heap, without the mapped model file)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def worker_pid(master: int) -> int | None:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


class Soak:
    def __init__(self, a: argparse.Namespace, base: str, master: int) -> None:
        self.a, self.base, self.master = a, base, master
        self.ctx = {"n_ctx": a.n_ctx, "parallel": a.parallel, "queue_size": a.queue_size, "max_body_bytes": 1 << 20}
        self.lock = threading.Lock()
        self.by_kind: dict[str, Counter] = {kind: Counter() for kind in KINDS}
        self.server_errors = self.unexpected = self.client_errors = 0
        self.samples: list[dict] = []
        self.t0 = time.monotonic()
        self.end = self.t0 + a.minutes * 60

    def client(self, i: int) -> None:
        rng = random.Random(self.a.seed * 1000 + i)
        kinds, weights = list(KINDS), [w for _, w in KINDS.values()]
        while time.monotonic() < self.end:
            kind = rng.choices(kinds, weights)[0]
            try:
                results = KINDS[kind][0](self.base, rng, self.ctx)
            except requests.RequestException as exc:
                results = [(0, False)]
                print(f"client {i}: {kind}: {type(exc).__name__}: {exc}", flush=True)
            if any(status == 503 for status, _ in results):
                time.sleep(rng.uniform(0.2, 1.0))  # the queue is full: back off as Retry-After asks
            with self.lock:
                for status, expected in results:
                    self.by_kind[kind][str(status)] += 1
                    self.unexpected += not expected
                    self.client_errors += status == 0 and not expected
                    self.server_errors += status >= 500 and not (status == 503 and expected)

    def sample(self) -> None:
        worker = worker_pid(self.master)
        row = {"t_s": round(time.monotonic() - self.t0, 1), "master_rss": rss_bytes(self.master)}
        row["worker_rss"] = rss_bytes(worker) if worker else None
        row["worker_rss_anon"] = rss_bytes(worker, "RssAnon") if worker else None
        try:
            health = requests.get(self.base + "/api/health", timeout=30).json()
            row["prompt_cache"] = health.get("prompt_cache")
            row["kv_cells_used"] = health.get("kv_cells_used")
        except (requests.RequestException, ValueError) as exc:
            row["health_error"] = str(exc)
        with self.lock:
            row["requests"] = sum(sum(c.values()) for c in self.by_kind.values())
            row["server_errors"] = self.server_errors
        self.samples.append(row)

    def report(self, finished: bool) -> dict:
        with self.lock:
            counts = {k: dict(c) for k, c in self.by_kind.items()}
            errors = (self.server_errors, self.unexpected, self.client_errors)
        return {
            "benchmark": "soak",
            "command": "python bench/soak.py " + " ".join(sys.argv[1:]),
            "finished": finished,
            "settings": {k: str(v) for k, v in vars(self.a).items()},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "requests_by_kind_and_status": counts,
            "server_errors_5xx": errors[0],
            "unexpected_answers": errors[1],
            "client_errors": errors[2],
            "memory": growth(self.samples, self.a.warmup_s),
            "samples": self.samples,
        }


def growth(samples: list[dict], warmup_s: float) -> dict:
    """The worker's RSS over the first WINDOW_S once the cache is full (or after warm-up) against
    its RSS over the last WINDOW_S (medians, so one busy moment moves neither); and the same for
    its heap beside the cache (RssAnon minus the cache's bytes), where a leak would show."""
    rows = [s for s in samples if s.get("worker_rss")]
    full_at = next(
        (
            s["t_s"]
            for s in rows
            if (c := s.get("prompt_cache")) and c.get("limit_bytes") and c["bytes"] >= CACHE_FULL * c["limit_bytes"]
        ),
        None,
    )
    cache_on = any((s.get("prompt_cache") or {}).get("limit_bytes") for s in rows)
    start = full_at if cache_on else warmup_s
    after = [s for s in rows if start is not None and s["t_s"] >= start]
    out = {"cache_on": cache_on, "cache_full_at_s": full_at, "growth_counted_from_s": start, "window_s": WINDOW_S}
    if not after or after[-1]["t_s"] - start < 2 * WINDOW_S:
        return out
    first = [s for s in after if s["t_s"] < start + WINDOW_S]
    last = [s for s in after if s["t_s"] >= after[-1]["t_s"] - WINDOW_S]
    beside_cache = {id(s): s["worker_rss_anon"] - (s.get("prompt_cache") or {}).get("bytes", 0) for s in after}
    for name, value in (
        ("rss", lambda s: s["worker_rss"]),
        ("rss_anon", lambda s: s["worker_rss_anon"]),
        ("anon_beside_cache", lambda s: beside_cache[id(s)]),
    ):
        base, end = statistics.median(map(value, first)), statistics.median(map(value, last))
        out[name] = {
            "first_window_bytes": int(base),
            "last_window_bytes": int(end),
            "max_bytes": max(map(value, after)),
            "growth": round(end / base - 1, 4),
        }
    out["growth_ok"] = out["rss"]["growth"] <= GROWTH_LIMIT
    return out


def write(result: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    a = parse_args(argv)
    port, out = free_port(), RESULTS / f"soak-{a.label}.json"
    env = {
        **os.environ,
        "LLAMA_SERVER_MODEL": str(a.model),
        "LLAMA_SERVER_PORT": str(port),
        "LLAMA_SERVER_PARALLEL": str(a.parallel),
        "LLAMA_SERVER_QUEUE_SIZE": str(a.queue_size),
        "LLAMA_SERVER_N_CTX": str(a.n_ctx),
        "LLAMA_SERVER_N_THREADS": str(a.threads),
        "LLAMA_SERVER_CACHE_RAM": a.cache_ram,
    }
    log_path = ROOT / "bench" / ".work" / f"soak-{a.label}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        command = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return run(a, f"http://127.0.0.1:{port}", proc, out)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(120)


def run(a: argparse.Namespace, base: str, proc: subprocess.Popen, out: Path) -> int:
    wait_ready(base, proc)
    soak = Soak(a, base, proc.pid)
    clients = [threading.Thread(target=soak.client, args=(i,), daemon=True) for i in range(a.clients)]
    for c in clients:
        c.start()
    while any(c.is_alive() for c in clients):
        soak.sample()
        write(soak.report(finished=False), out)
        s = soak.samples[-1]
        print(
            f"{s['t_s']:7.0f} s  worker RSS {(s['worker_rss'] or 0) / 2**20:7.1f} MiB "
            f"(anon {(s['worker_rss_anon'] or 0) / 2**20:7.1f})  cache "
            f"{(s.get('prompt_cache') or {}).get('bytes', 0) / 2**20:7.1f} MiB  requests {s['requests']:6d}  "
            f"5xx {s['server_errors']}",
            flush=True,
        )
        time.sleep(min(a.sample_s, max(1.0, soak.end - time.monotonic())))
    soak.sample()
    result = soak.report(finished=True)
    write(result, out)
    print_summary(result, out)
    mem = result["memory"]
    return 0 if result["server_errors_5xx"] == 0 and mem.get("growth_ok", False) else 1


def wait_ready(base: str, proc: subprocess.Popen, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(base + "/api/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    sys.exit("the server did not become ready; its log is in bench/.work/")


def print_summary(result: dict, out: Path) -> None:
    print(f"\n{'kind':18} answers by status")
    for kind, counts in result["requests_by_kind_and_status"].items():
        print(f"{kind:18} {', '.join(f'{s}: {n}' for s, n in sorted(counts.items()))}")
    mem = result["memory"]
    print(f"\nserver errors (5xx): {result['server_errors_5xx']}, unexpected answers: {result['unexpected_answers']}")
    if "rss" in mem:
        for name in ("rss", "rss_anon", "anon_beside_cache"):
            m = mem[name]
            print(
                f"worker {name} from {mem['growth_counted_from_s']} s, medians of the first and last "
                f"{mem['window_s']} s: {m['first_window_bytes'] / 2**20:.1f} MiB -> "
                f"{m['last_window_bytes'] / 2**20:.1f} MiB ({m['growth']:+.2%}; max {m['max_bytes'] / 2**20:.1f} MiB)"
            )
    else:
        print("too few samples after the cache filled (or warm-up) to judge growth")
    print(f"results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
