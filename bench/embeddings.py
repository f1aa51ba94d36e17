"""Embedding throughput and latency: this server against llama-server --embedding on the same GGUF.

Both servers run side by side on one embedding model (all-MiniLM-L6-v2, f16 or Q8_0), with the
same threads and the same physical batch (512 tokens), and are asked in interleaved rounds (one
round of each scenario on ours, then on llama-server, and so on), always through OpenAI's
/v1/embeddings with the same texts (`texts`: made-up sentences of 4 to 60 words):
  one-text     1 client, 1 text per request            texts/s
  32-texts     1 client, 32 texts per request          texts/s
  8x8          8 clients at once, 8 texts per request  texts/s
  latency      a 1-text request every 50 ms while 8 clients embed 32 texts each: p50/p95 ms
Each round's ratio ours/llama-server is kept; the summary gives their spread and what they
support (bench/_spread.py). "ours" is the default server (vectors bit for bit independent of
their batch: batches of at most 63 rows); "ours-loose" runs with BATCH_INVARIANT=off (batches
as large as llama-server's). With --torch DIR (a sentence-transformers checkpoint, e.g. the one
the converter fetches), the same 32-text requests run through sentence-transformers in this
process on the same threads, as a user would otherwise embed (torch is a bench-only dependency).

    python bench/embeddings.py --model models/minilm-f16.gguf            # writes bench/results/embeddings-<model>.json
    python bench/embeddings.py --model models/minilm-q8_0.gguf --rounds 7 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _spread import claim, spread  # noqa: E402
from _targets import ROOT, WORK, prepare_llama_server, stop_on_sigterm  # noqa: E402
from concurrency import free_port, post, wait_ready, write_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BATCH = 512  # tokens in one physical batch, on both sides (MiniLM's context)
SCENARIOS = ("one-text", "32-texts", "8x8")
WORDS = (
    "the a llama camel river mountain quickly slowly carries wool across high cold plains where herders "
    "walk with their animals every morning before sunrise and sing old songs about rain stone grass"
).split()


def texts(n: int, seed: int = 0) -> list[str]:
    """`n` made-up sentences of 4 to 60 words, the same for every server and round."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(4, 60))).capitalize() + "." for _ in range(n)]


def embed(base: str, batch: list[str]) -> int:
    """One /v1/embeddings request; the number of vectors it answered."""
    return len(post(f"{base}/v1/embeddings", {"input": batch, "encoding_format": "float"})["data"])


def throughput(base: str, scenario: str, pool: list[str]) -> float:
    """Texts per second for one round of `scenario` (SCENARIOS)."""
    clients, per_request, requests = {"one-text": (1, 1, 64), "32-texts": (1, 32, 8), "8x8": (8, 8, 8)}[scenario]
    done = [0] * clients

    def client(c: int) -> None:
        for r in range(requests):
            start = (c * requests + r) * per_request % (len(pool) - per_request)
            done[c] += embed(base, pool[start : start + per_request])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def latency(base: str, pool: list[str], probes: int = 20) -> dict:
    """p50/p95 ms of 1-text requests sent every 50 ms while 8 clients embed 32 texts per request."""
    stop = threading.Event()

    def bulk(c: int) -> None:
        i = c
        while not stop.is_set():
            start = i * 32 % (len(pool) - 32)
            embed(base, pool[start : start + 32])
            i += 8

    workers = [threading.Thread(target=bulk, args=(c,)) for c in range(8)]
    for w in workers:
        w.start()
    times = []
    try:
        time.sleep(0.5)
        for i in range(probes):
            t0 = time.perf_counter()
            embed(base, [pool[i]])
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
    finally:
        stop.set()
        for w in workers:
            w.join()
    times.sort()
    return {"p50_ms": round(times[len(times) // 2], 2), "p95_ms": round(times[int(len(times) * 0.95) - 1], 2)}


SERVERS = ("ours", "ours-loose", "llama-server")


def start(name: str, model: Path, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if name.startswith("ours"):
        env = {
            "LLAMA_SERVER_MODEL": str(model),
            "LLAMA_SERVER_PORT": str(port),
            "LLAMA_SERVER_N_THREADS": str(threads),
            "LLAMA_SERVER_QUEUE_SIZE": "32",
            "LLAMA_SERVER_HTTP_THREADS": "64",
            "LLAMA_SERVER_BATCH_INVARIANT": "off" if name == "ours-loose" else "on",
        }
        gunicorn = str(ROOT / ".venv" / "bin" / "gunicorn")
        argv = [gunicorn, "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"]
    else:
        argv = [str(prepare_llama_server()), "-m", str(model), "--embedding", "--host", "127.0.0.1",
                "--port", str(port), "-t", str(threads), "-tb", str(threads), "-np", "8", "-c", str(8 * BATCH),
                "-b", str(BATCH), "-ub", str(BATCH)]  # fmt: skip
        env = {}
    log = open(WORK / f"embeddings-{name}.log", "w")
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    wait_ready(f"{base}/api/health" if name.startswith("ours") else f"{base}/health", proc)
    return proc, base


def torch_rate(checkpoint: Path, pool: list[str], threads: int) -> float:
    """Texts/s of sentence-transformers on the same 32-text batches, in this process."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(checkpoint), device="cpu")
    model.encode(pool[:32])  # warm up
    t0 = time.perf_counter()
    for r in range(8):
        model.encode(pool[r * 32 : r * 32 + 32], batch_size=32)
    return 8 * 32 / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an embedding GGUF (e.g. all-MiniLM-L6-v2 f16)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--torch", type=Path, help="a sentence-transformers checkpoint directory, to compare with")
    args = ap.parse_args(argv)
    stop_on_sigterm()
    WORK.mkdir(parents=True, exist_ok=True)
    pool = texts(512)
    servers, raw = {}, []
    try:
        for name in SERVERS:
            servers[name] = start(name, args.model, args.threads)
        for _, base in servers.values():
            throughput(base, "one-text", pool)  # warm up
        for r in range(args.rounds):
            for scenario in SCENARIOS:
                for name, (_, base) in servers.items():
                    rate = throughput(base, scenario, pool)
                    raw.append({"round": r, "scenario": scenario, "server": name, "texts_per_s": rate})
            for name, (_, base) in servers.items():
                raw.append({"round": r, "scenario": "latency", "server": name, **latency(base, pool)})
            print(json.dumps(raw[-2:]), flush=True)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    result = {"model": args.model.name, "threads": args.threads, "batch": BATCH, "rounds": args.rounds,
              "summary": summarize(raw), "raw": raw}  # fmt: skip
    if args.torch:
        result["torch_32_texts_per_s"] = round(torch_rate(args.torch, pool, args.threads), 1)
    out = RESULTS / f"embeddings-{args.model.stem}.json"
    write_atomic(out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result["summary"], indent=1))
    return 0


def summarize(raw: list[dict]) -> dict:
    """Per scenario: each server's spread and the per-round ratios of each of ours to llama-server."""
    out: dict = {}
    for scenario in SCENARIOS:
        rows = [x for x in raw if x["scenario"] == scenario]
        by = {n: {x["round"]: x["texts_per_s"] for x in rows if x["server"] == n} for n in SERVERS}
        out[scenario] = {f"{n}_texts_per_s": spread(v.values(), 1) for n, v in by.items() if v}
        for n in SERVERS[:2]:
            ratios = [by[n][r] / by["llama-server"][r] for r in by[n] if r in by["llama-server"]]
            if ratios:
                out[scenario][f"{n}_over_llama_server"] = claim(ratios, n, "llama-server")
    lat = [x for x in raw if x["scenario"] == "latency"]
    out["latency"] = {n: {k: spread(x[k] for x in lat if x["server"] == n) for k in ("p50_ms", "p95_ms")}
                      for n in SERVERS if any(x["server"] == n for x in lat)}  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
