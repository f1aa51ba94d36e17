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
their batch: server/engine/embedding/layout.py); "ours-loose" runs with BATCH_INVARIANT=off
(sequences packed back to back, as llama-server does).

--quantize Q8_0 benches a quantization of --model instead, made once by the project's quantizer
(bench/.work/embed/). --torch DIR (a sentence-transformers checkpoint, e.g. models/all-MiniLM-L6-v2)
adds what a user would otherwise run: the same 32-text requests through sentence-transformers on
PyTorch's CPU build, on the same threads, in each round; torch is a bench-only dependency,
installed once into its own virtual environment (bench/requirements-embeddings.txt).

    python bench/embeddings.py --model bench/.work/embed/all-minilm-l6-v2.f16.gguf --torch models/all-MiniLM-L6-v2
    python bench/embeddings.py --model bench/.work/embed/all-minilm-l6-v2.f16.gguf --quantize Q8_0 --rounds 7
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


TORCH_VENV = WORK / "torch-venv"


def torch_python() -> Path:
    """The bench's own virtual environment with sentence-transformers on PyTorch's CPU build (made once)."""
    python = TORCH_VENV / "bin" / "python"
    stamp = TORCH_VENV / ".installed"
    requirements = ROOT / "bench" / "requirements-embeddings.txt"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        stamp.write_text(requirements.read_text())
    return python


class Torch:
    """sentence-transformers in a subprocess (bench/_torch_embed.py), asked once per round."""

    def __init__(self, checkpoint: Path, pool: list[str], threads: int) -> None:
        argv = [str(torch_python()), str(ROOT / "bench" / "_torch_embed.py"), str(checkpoint), str(threads)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(pool) + "\n")
        self.proc.stdin.flush()
        self.info = json.loads(self.proc.stdout.readline())

    def rate(self) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(json.loads(self.proc.stdout.readline())["texts_per_s"])

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True, help="an embedding GGUF (e.g. all-MiniLM-L6-v2 f16)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quantize", metavar="TYPE", help="bench this quantization of --model (e.g. Q8_0)")
    ap.add_argument("--torch", type=Path, help="a sentence-transformers checkpoint directory, to compare with")
    ap.add_argument("--probes", type=int, default=20, help="one-text requests timed per latency round")
    ap.add_argument("--out", type=Path, help="results file (default: bench/results/embeddings-<model>.json)")
    args = ap.parse_args(argv)
    stop_on_sigterm()
    WORK.mkdir(parents=True, exist_ok=True)
    model = quantized(args.model, args.quantize) if args.quantize else args.model
    pool = texts(512)
    servers: dict = {}
    raw: list[dict] = []
    torch = None
    try:
        for name in SERVERS:
            servers[name] = start(name, model, args.threads)
        torch = Torch(args.torch, pool, args.threads) if args.torch else None
        for _, base in servers.values():
            throughput(base, "one-text", pool)  # warm up
        for r in range(args.rounds):
            for scenario in SCENARIOS:
                for name, (_, base) in servers.items():
                    rate = throughput(base, scenario, pool)
                    raw.append({"round": r, "scenario": scenario, "server": name, "texts_per_s": rate})
                if scenario == "32-texts" and torch is not None:
                    raw.append({"round": r, "scenario": scenario, "server": "torch", "texts_per_s": torch.rate()})
            for name, (_, base) in servers.items():
                raw.append({"round": r, "scenario": "latency", "server": name, **latency(base, pool, args.probes)})
            print(json.dumps([x for x in raw if x["round"] == r]), flush=True)
            save(args, model, torch, raw)  # each round as it ends: an interrupted run keeps its rounds
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
        if torch is not None:
            torch.close()
    print(json.dumps(save(args, model, torch, raw)["summary"], indent=1))
    return 0


def save(args: argparse.Namespace, model: Path, torch: "Torch | None", raw: list[dict]) -> dict:
    """Write the results so far to bench/results/embeddings-<model>.json."""
    rounds = len({x["round"] for x in raw})
    command = " ".join(["bench/embeddings.py", *sys.argv[1:]])
    result = {"command": command, "model": model.name, "threads": args.threads, "batch": BATCH, "rounds": rounds,
              "latency_probes": args.probes, "torch": torch.info if torch else None,
              "summary": summarize(raw), "raw": raw}  # fmt: skip
    out = args.out or RESULTS / f"embeddings-{model.stem}.json"
    write_atomic(out, (json.dumps(result, indent=1) + "\n").encode())
    return result


def quantized(model: Path, qtype: str) -> Path:
    """`model` quantized to `qtype` by the project's quantizer (made once, beside the other embedding GGUFs)."""
    sys.path.insert(0, str(ROOT))
    from conversion.quantizer import quantize

    stem = model.stem.removesuffix(".f16").removesuffix(".f32")
    out = WORK / "embed" / f"{stem}.{qtype.lower()}.gguf"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        quantize(model, out, qtype, progress=False)
    return out


def summarize(raw: list[dict]) -> dict:
    """Per scenario: each server's spread and the per-round ratios of each of ours to llama-server
    (and, where torch ran, of each server to torch)."""
    out: dict = {}
    for scenario in SCENARIOS:
        rows = [x for x in raw if x["scenario"] == scenario]
        by = {n: {x["round"]: x["texts_per_s"] for x in rows if x["server"] == n} for n in (*SERVERS, "torch")}
        out[scenario] = {f"{n}_texts_per_s": spread(v.values(), 1) for n, v in by.items() if v}
        pairs = [(n, "llama-server") for n in SERVERS[:2]] + [(n, "torch") for n in SERVERS]
        for n, ref in pairs:
            ratios = [by[n][r] / by[ref][r] for r in by[n] if r in by[ref]]
            if ratios:
                out[scenario][f"{n}_over_{ref.replace('-', '_')}"] = claim(ratios, n, ref)
    lat = [x for x in raw if x["scenario"] == "latency"]
    out["latency"] = {n: {k: spread(x[k] for x in lat if x["server"] == n) for k in ("p50_ms", "p95_ms")}
                      for n in SERVERS if any(x["server"] == n for x in lat)}  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
