"""Determinism at temperature 0: the same request alone, with 3 others in flight, and after a cache restore.

For each server side (this checkout, and --before's for comparison), one server with
PARALLEL=4 and default settings otherwise (prefix cache, RAM prompt cache, flash
attention auto) answers each of the prompts at temperature 0, three ways:

  alone     nothing else in flight
  together  three other requests (other prompts, other lengths) sent just before it,
            so it joins a batch that is decoding and evaluating prompts
  restored  after four other prompts took every slot (its state went to the RAM
            prompt cache), asked again alone: its prompt comes back from RAM

and counts how many of the together and restored answers are byte-identical to the
alone one. The sides run one after the other (each on a quiet server of its own).

    python bench/determinism.py --before DIR [--model m.gguf] [--out bench/results/determinism-<model>.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _invariance_prompts import FACTS, PROMPTS  # noqa: E402
from _targets import ROOT, WORK, stop_on_sigterm  # noqa: E402
from concurrency import free_port, post, wait_ready, write_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"
OTHERS = [  # (prompt, max_tokens) of the requests around the measured one
    ("Tell me a long story about a dragon who learns to bake bread.", 96),
    ("Count from one to twenty in words.", 48),
    (f"Some background first.\n{FACTS}\nWhat is the last fact?", 64),
    ("Name five rivers in Europe.", 32),
]


def body(prompt: str, max_tokens: int) -> dict:
    return {"query": prompt, "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": 1.0, "stream": False}


class Side:
    """One server, this checkout's or --before's, with 4 slots."""

    def __init__(self, name: str, home: Path, args) -> None:
        self.name, port = name, free_port()
        env = {
            "LLAMA_SERVER_MODEL": str(args.model),
            "LLAMA_SERVER_PORT": str(port),
            "LLAMA_SERVER_PARALLEL": "4",
            "LLAMA_SERVER_N_CTX": str(args.ctx),
            "LLAMA_SERVER_N_THREADS": str(args.threads),
        }
        self.log = open(WORK / f"determinism-{name}.log", "w")
        self.proc = subprocess.Popen(
            [str(home / ".venv" / "bin" / "python"), "-m", "server"],
            cwd=home,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{port}"
        wait_ready(self.base + "/api/health", self.proc)

    def ask(self, prompt: str, max_tokens: int) -> str:
        return post(self.base + "/api/respond", body(prompt, max_tokens))["response"]

    def hits(self) -> float:
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("llama_server_prompt_cache_hits_total "):
                    return float(line.split()[1])
        return 0.0

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def with_others(side: Side, prompt: str, max_tokens: int) -> str:
    """`prompt` sent while the three other requests are in flight (started 50 ms apart before it)."""
    threads = [threading.Thread(target=side.ask, args=other) for other in OTHERS[:3]]
    for t in threads:
        t.start()
        time.sleep(0.05)
    answer = side.ask(prompt, max_tokens)
    for t in threads:
        t.join()
    return answer


def measure(side: Side, max_tokens: int) -> dict:
    alone = [side.ask(p, max_tokens) for p in PROMPTS]
    together = [with_others(side, p, max_tokens) for p in PROMPTS]
    restored, restores = [], 0
    for p in PROMPTS:
        side.ask(p, max_tokens)  # its state is in a slot now
        threads = [threading.Thread(target=side.ask, args=other) for other in OTHERS]
        for t in threads:  # four others take every slot: its state goes to RAM
            t.start()
        for t in threads:
            t.join()
        before = side.hits()
        restored.append(side.ask(p, max_tokens))
        restores += side.hits() > before
    return {
        "together_identical": sum(a == b for a, b in zip(alone, together)),
        "restored_identical": sum(a == b for a, b in zip(alone, restored)),
        "restores_seen": restores,
        "prompts": len(PROMPTS),
        "answers": {"alone": alone, "together": together, "restored": restored},
    }


def main(argv: list[str]) -> int:
    stop_on_sigterm()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, help="another checkout of this server (with its .venv), measured too")
    ap.add_argument("--model", type=Path, help="GGUF file (default: the server's default model)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from server.model.files import resolve_model

        args.model = resolve_model(None).path
    args.model = args.model.resolve()
    out = args.out or RESULTS / f"determinism-{args.model.stem}.json"
    WORK.mkdir(parents=True, exist_ok=True)
    sides = {"ours": ROOT, **({"before": args.before.resolve()} if args.before else {})}
    results = {}
    for name, home in sides.items():
        side = Side(name, home, args)
        try:
            results[name] = measure(side, args.max_tokens)
        finally:
            side.close()
        r = results[name]
        print(
            f"{name:8} together {r['together_identical']}/{r['prompts']} identical, "
            f"restored {r['restored_identical']}/{r['prompts']} ({r['restores_seen']} restores seen)",
            flush=True,
        )
    doc = {
        "command": "python bench/determinism.py " + " ".join(argv),
        "model": args.model.name,
        "settings": {"parallel": 4, "ctx": args.ctx, "threads": args.threads, "max_tokens": args.max_tokens},
        "loadavg": os.getloadavg(),
        "sides": {k: os.path.relpath(v, ROOT) for k, v in sides.items()},  # no machine paths in results
        "results": results,
    }
    write_atomic(out, json.dumps(doc, indent=1).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
