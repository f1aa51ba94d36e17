"""Prompt speed: prompt tokens per second, ours (batch invariance on and off) beside llama-server.

The shape of retrieval, summarizing and editing work: a long prompt and one answer token, at
/v1/chat/completions, greedy. Each timed pass starts a fresh server (nothing cached, nothing seen
before), sends 1 request or N arriving together, and stops it; the sides of one round run back to
back, in an order that turns each round, so slow drift falls on all of them. The figure is
prompt tokens (the server's own `usage.prompt_tokens`) over the client's wall time until the last
answer is back: what a user waits for. One answer token is part of that time on every side.

    python bench/prompt_speed.py --model models/smollm2-135m-instruct-q4_1.gguf
    python bench/prompt_speed.py --model models/gemma-3-270m-q4_k_m.gguf --sizes 500,1500 --rounds 3

Sides: ours (the shipped defaults: BATCH_INVARIANT on), ours-off (BATCH_INVARIANT=off), llama-server
(built from the llama.cpp source the pinned llama-cpp-python vendors, its defaults). Same threads,
slots, context and flash attention setting on every side. Writes bench/results/prompt-speed-<model>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from _spread import claim, spread  # noqa: E402
from _targets import _llama_server, _ours, prepare_llama_server, stop_on_sigterm  # noqa: E402
from concurrency import commits, free_port, post, wait_ready, write_atomic  # noqa: E402

SIDES = ("ours", "ours-off", "llama-server")
# Prose and code from this repository's own documentation: text a retrieval or editing prompt carries.
CORPUS = sorted((ROOT / "docs").glob("*.md"))


def prompt_text(n_tokens: int, salt: int) -> str:
    """About `n_tokens` tokens of documentation text (its markdown and code run about 2.3 characters
    a token), different for every `salt` (its start moves), so that no two passes send the same prompt."""
    text = "\n\n".join(p.read_text() for p in CORPUS)
    n_chars = int(2.3 * n_tokens)
    start = (salt * 7919) % max(1, len(text) - n_chars)
    body = text[start : start + n_chars]
    return "Summarize the following documentation in one sentence.\n\n" + body


def command(side: str, model: Path, port: int, a: argparse.Namespace) -> tuple[list, dict]:
    if side == "llama-server":
        return _llama_server(None)(model, port, a)
    cmd, env = _ours(None)(model, port, a)
    env["LLAMA_SERVER_SPECULATIVE"] = "off"  # one answer token: nothing to draft, and no probe time
    # Our default REQUEST_TIMEOUT (300 s, queue included) would cut four 3,500-token prompts on the 7B
    # (about ten minutes here) with a 504; llama-server sets no such limit. The figure is about speed.
    env["LLAMA_SERVER_REQUEST_TIMEOUT"] = "3600"
    if side == "ours-off":
        env["LLAMA_SERVER_BATCH_INVARIANT"] = "off"
    return cmd, env


def one_pass(side: str, model: Path, size: int, clients: int, salt: int, a: argparse.Namespace) -> dict:
    """A fresh server, `clients` requests of about `size` prompt tokens sent together, the server stopped."""
    port = free_port()
    cmd, env = command(side, model, port, a)
    log = open(ROOT / "bench" / ".work" / f"prompt-speed-{side}.log", "w")
    proc = subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + ("/health" if side == "llama-server" else "/api/health"), proc)
        bodies = [
            {
                "messages": [{"role": "user", "content": prompt_text(size, salt * 16 + i)}],
                "max_tokens": 1,
                "temperature": 0,
            }
            for i in range(clients)
        ]
        answers: list[dict] = [{} for _ in bodies]

        def ask(i: int) -> None:
            # No byte comes back until the whole batch's prompts are in: four 3,500-token prompts on a
            # 7B take about ten minutes here, past the usual 600 s socket timeout.
            answers[i] = post(base + "/v1/chat/completions", bodies[i], timeout=3600)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
        tokens = sum(ans["usage"]["prompt_tokens"] for ans in answers)
        return {"side": side, "size": size, "clients": clients, "prompt_tokens": tokens, "seconds": seconds}
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def summarize(raw: list[dict], sizes: list[int], clients: list[int]) -> list[dict]:
    """Per size and request count: each side's speed and the per-round ratios to llama-server
    (a side left out with --sides has n 0 and no ratio)."""
    rows = []
    for size in sizes:
        for n in clients:
            cell = [r for r in raw if r["size"] == size and r["clients"] == n]
            if not cell:
                continue
            speed = {s: [r["prompt_tokens"] / r["seconds"] for r in cell if r["side"] == s] for s in SIDES}
            rounds = sorted({r["round"] for r in cell})
            by = {(r["round"], r["side"]): r["prompt_tokens"] / r["seconds"] for r in cell}
            ratio = [by[(k, "ours")] / by[(k, "llama-server")] for k in rounds if (k, "ours") in by]
            ratio_off = [by[(k, "ours-off")] / by[(k, "llama-server")] for k in rounds if (k, "ours-off") in by]
            rows.append(
                {
                    "size": size,
                    "clients": n,
                    "prompt_tokens": cell[0]["prompt_tokens"],
                    "tokens_per_s": {s: spread(v, 1) for s, v in speed.items()},
                    "ours_vs_llama_server": claim(ratio, "ours", "llama-server"),
                    "ours_off_vs_llama_server": claim(ratio_off, "ours-off", "llama-server"),
                }
            )
    return rows


def table(rows: list[dict]) -> str:
    out = [
        "| prompt tokens | requests | ours | ours, invariance off | llama-server | ours / llama-server (min-max) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["tokens_per_s"]
        c = r["ours_vs_llama_server"]
        out.append(
            f"| {r['prompt_tokens'] // r['clients']} | {r['clients']} | {t['ours']['median']} | "
            f"{'-' if t['ours-off']['median'] is None else t['ours-off']['median']} | {t['llama-server']['median']} | "
            f"**{c['median']}** ({c['min']}-{c['max']}) |"
        )
    return "\n".join(out)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--sizes", default="500,1500,3500", help="prompt sizes, in tokens")
    ap.add_argument("--clients", default="1,4", help="requests arriving together")
    ap.add_argument("--together-max", type=int, default=3500, help="largest size sent by several clients at once")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096, help="context per slot")
    ap.add_argument(
        "--sides", default=",".join(SIDES), help="of ours, ours-off, llama-server (long runs may leave out ours-off)"
    )
    ap.add_argument("--out", type=Path, help="results file (default bench/results/prompt-speed-<model>.json)")
    a = ap.parse_args(argv)
    a.parallel, a.n_gpu_layers, a.flash_attn = 4, 0, "auto"
    sizes = [int(s) for s in a.sizes.split(",")]
    clients = [int(c) for c in a.clients.split(",")]
    asked = set(a.sides.split(","))
    if asked - set(SIDES) or not {"ours", "llama-server"} <= asked:
        ap.error(f"--sides: names from {', '.join(SIDES)}, ours and llama-server among them (the ratio's two)")
    sides = tuple(s for s in SIDES if s in asked)
    stop_on_sigterm()
    prepare_llama_server()
    raw = []
    for k in range(a.rounds):
        for size in sizes:
            for n in clients:
                if n > 1 and size > a.together_max:
                    continue
                order = sides[k % len(sides) :] + sides[: k % len(sides)]
                for side in order:
                    r = one_pass(side, a.model.resolve(), size, n, k, a)
                    raw.append({**r, "round": k})
                    speed = r["prompt_tokens"] / r["seconds"]
                    print(f"round {k} {side:>12} {size:>5} x{n}: {speed:.1f} tok/s", flush=True)
    rows = summarize(raw, sizes, clients)
    print(table(rows))
    out = a.out or ROOT / "bench" / "results" / f"prompt-speed-{a.model.stem}.json"
    doc = {
        "command": "python bench/prompt_speed.py " + " ".join(argv),
        "model": a.model.name,
        "threads": a.threads,
        "slots": a.parallel,
        "commits": commits(argparse.Namespace(before=None)),
        "rows": rows,
        "table": table(rows),
        "raw": raw,
    }
    write_atomic(out, (json.dumps(doc, indent=1) + "\n").encode())
    print("wrote", out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
