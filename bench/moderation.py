"""What moderation adds to the time to first token: MODERATION off, input, both (strict), both (fast).

    .venv/bin/python bench/moderation.py                  # Gemma 3 270M answers, SmolLM2 stands in as the guard
    .venv/bin/python bench/moderation.py --requests 12
    .venv/bin/python bench/moderation.py --model M.gguf --guard G.gguf --n-gpu-layers -1 --out R.json   # a GPU

One gunicorn per configuration, the guard a model of the same library (GUARD_MODEL); each
request a fresh ~200-token question (a number of its own up front, so the answering model's
prefix cache cannot help, while the guard's fixed prompt start is shared as in service), streamed
through /v1/chat/completions with 16 answer tokens; 1 client, then 4 at once. Time to first
token is until the first content chunk arrives (or the answer's end, when nothing was sent). A
stand-in guard's verdicts mean nothing; GUARD_THRESHOLD is 1 so that few block, and with
MODERATION_REFUSAL set a blocked request still streams (the refusal, once the verdict is in),
so its time is the verdict's, as a passed one's is; blocked requests are counted. The goal in
the issue is on a GPU with a Llama Guard 3-1B-shaped guard (random weights do: latency does
not depend on them); by default this is the CPU figure with SmolLM2 as the stand-in.
Writes bench/results/moderation-cpu.json (or --out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._measure import git_commit, machine_info  # noqa: E402
from server.model.files import MODELS_DIR, ensure_gemma, ensure_smollm2  # noqa: E402

CONFIGS = {
    "off": {"LLAMA_SERVER_MODERATION": "off"},
    "input": {"LLAMA_SERVER_MODERATION": "input"},
    "both-strict": {"LLAMA_SERVER_MODERATION": "both", "LLAMA_SERVER_MODERATION_STREAM": "strict"},
    "both-fast": {"LLAMA_SERVER_MODERATION": "both", "LLAMA_SERVER_MODERATION_STREAM": "fast"},
}
TOPIC = (
    "I am planning a small vegetable garden behind my house this spring. The soil is heavy clay, the yard gets "
    "about six hours of sun, and I would like to grow tomatoes, beans, lettuce, carrots and some herbs such as "
    "basil and parsley. My neighbour says raised beds are the only way to go with clay, but my brother thinks I "
    "should dig in compost and plant straight into the ground. I also have a dog who likes to dig, and I am not "
    "sure how much time I can give it every week, maybe three or four hours. What would you suggest as a plan "
    "for the first season, including what to plant first and how to keep the dog out of it?"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, guard: Path, folder: Path, gpu_layers: str, env_extra: dict, log: Path):
    port = free_port()
    env = {
        **os.environ,
        "LLAMA_SERVER_MODEL": str(model),
        "LLAMA_SERVER_MODELS_DIR": str(folder),  # the guard's library
        "LLAMA_SERVER_PORT": str(port),
        "LLAMA_SERVER_N_CTX": "2048",
        "LLAMA_SERVER_PARALLEL": "4",
        "LLAMA_SERVER_N_GPU_LAYERS": gpu_layers,
        "LLAMA_SERVER_GUARD_MODEL": guard.name.removesuffix(".gguf"),
        "LLAMA_SERVER_GUARD_THRESHOLD": "1",
        "LLAMA_SERVER_MODERATION_REFUSAL": "I can't help with that.",
        **env_extra,
    }
    cmd = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/api/health", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server did not start: see {log}")


def ask(base: str, n: int) -> tuple[float, bool]:
    """(seconds to the first content chunk, blocked?) for question number n."""
    body = {
        "messages": [{"role": "user", "content": f"Question {n}. {TOPIC}"}],
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
    }
    started, first = time.perf_counter(), None
    with requests.post(base + "/v1/chat/completions", json=body, stream=True, timeout=300) as r:
        if r.status_code != 200:
            return time.perf_counter() - started, True
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            choice = (chunk.get("choices") or [{}])[0]
            if first is None and choice.get("delta", {}).get("content"):
                first = time.perf_counter() - started
            if choice.get("finish_reason") == "content_filter":
                return first or time.perf_counter() - started, True
    return first if first is not None else time.perf_counter() - started, False


def run(base: str, clients: int, requests_each: int, counter: list[int]) -> dict:
    ttfts: list[float] = []
    blocked = 0
    lock = threading.Lock()

    def client() -> None:
        nonlocal blocked
        for _ in range(requests_each):
            with lock:
                counter[0] += 1
                n = counter[0]
            ttft, was_blocked = ask(base, n)
            with lock:
                ttfts.append(ttft)
                blocked += was_blocked

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ttfts.sort()
    return {
        "requests": len(ttfts),
        "blocked": blocked,
        "ttft_p50_s": round(statistics.median(ttfts), 3),
        "ttft_p95_s": round(ttfts[min(len(ttfts) - 1, round(0.95 * (len(ttfts) - 1)))], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=8, help="requests per client count (split among clients)")
    parser.add_argument("--model", type=Path, help="the answering model's GGUF (default: Gemma 3 270M)")
    parser.add_argument("--guard", type=Path, help="the guard's GGUF (default: SmolLM2 as a stand-in)")
    parser.add_argument("--n-gpu-layers", default="0", help="N_GPU_LAYERS of the servers (default 0: CPU)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "moderation-cpu.json")
    args = parser.parse_args()
    model = (args.model or ensure_gemma(MODELS_DIR)).resolve()
    guard = (args.guard or ensure_smollm2(MODELS_DIR)).resolve()
    work = ROOT / "bench" / ".work" / "moderation"
    folder = work / "library"  # the guard alone, by its file's name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (folder / guard.name).symlink_to(guard)
    results: dict = {}
    counter = [0]
    for name, env in CONFIGS.items():
        proc, base = start(model, guard, folder, args.n_gpu_layers, env, work / f"{name}.log")
        try:
            ask(base, 0)  # loads the guard (and warms both models) outside the measurement
            results[name] = {f"{c}_clients": run(base, c, max(args.requests // c, 1), counter) for c in (1, 4)}
        finally:
            proc.terminate()
            proc.wait(30)
    for name in CONFIGS:
        for clients in ("1_clients", "4_clients"):
            off, this = results["off"][clients]["ttft_p50_s"], results[name][clients]
            this["ttft_p50_added_pct"] = round(100 * (this["ttft_p50_s"] - off) / off, 1)
    record = {"machine": machine_info(), "commit": git_commit(ROOT), "model": model.name, "guard": guard.name}
    record["n_gpu_layers"] = args.n_gpu_layers
    record["results"] = results
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.rename(args.out)
    print(f"{'config':<12} {'clients':>7} {'p50 s':>7} {'p95 s':>7} {'added':>7} {'blocked':>7}")
    for name, by_clients in results.items():
        for clients, r in by_clients.items():
            print(
                f"{name:<12} {clients.split('_')[0]:>7} {r['ttft_p50_s']:>7} {r['ttft_p95_s']:>7} "
                f"{r['ttft_p50_added_pct']:>6}% {r['blocked']:>7}"
            )


if __name__ == "__main__":
    main()
