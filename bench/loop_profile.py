"""Where the engine thread's time goes under N clients: py-spy samples, sorted into the loop's parts.

Starts the real server (gunicorn, as bench/serve.py does), keeps N clients sending non-streamed
128-token answers (greedy, end of sequence ignored, each question new, as the concurrency bench's
--fresh-questions), and has py-spy sample the worker twice for --seconds each:
  1. every thread, idle ones too (`--idle`): the engine thread's samples, each put in the first
     part of the loop that its stack shows (see PARTS), give the share of wall time of each;
  2. only the thread holding the GIL (`--gil`): the engine thread's samples in Python code there,
     against those of pass 1, say how long it sat in Python code waiting for the GIL (held by
     the HTTP threads), not running.
Writes one JSON (--out) with, per client count: the shares, the GIL wait, the server's tokens/s
while sampled, and the top frames; prints a table.

    python bench/loop_profile.py --model m.gguf --clients 1,8,16 --out bench/results/loop-profile-cpu.json
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import serve  # noqa: E402  (the server's start-up and its question)
from _measure import machine_info  # noqa: E402

# (part, what in a stack shows it), checked from the innermost frame outwards: the first
# frame that matches names the sample's part. A frame is "function (file:line)"; a call into
# llama.cpp (ctypes) has no frame of its own, so the innermost frame's source line is matched too.
PARTS = [
    ("llama_decode", ("llama_decode(",)),
    ("logits read (waits for the device)", ("llama_get_logits",)),
    (
        "sampling",
        ("llama_sampler_", "greedy_token", "penalize", "apply_bias", "logprobs.py", "_sample (", "sample_rows"),
    ),
    ("grammar", ("constraints/",)),
    ("detokenize and stop strings", ("Pieces", "text_bytes", "TextAssembler", "sampling.py", "sequence.py")),
    ("events to HTTP threads", ("generation.py", "_emit (", "_on_event (", "_end (")),
    ("speculation", ("speculation/", "_plan_drafts", "_after_verify")),
    ("waiting for work", ("_take_new (server/engine/engine.py",)),
]
IDLE_LEAVES = ("wait (threading.py", "get (queue.py", "_take_new (")
ENGINE = "_serve (server/engine/engine.py"
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]+):(?P<line>\d+)\)$")


@functools.cache
def source_line(frame: str) -> str:
    """The source line a frame of this repository's code stands at ('' for any other)."""
    m = FRAME.match(frame)
    path = REPO / m["file"] if m else None
    if path is None or not path.is_file():
        return ""
    lines = path.read_text().splitlines()
    n = int(m["line"])
    return lines[n - 1].strip() if 0 < n <= len(lines) else ""


def in_c(frame: str) -> bool:
    """Whether a sample stood in a call into llama.cpp (ctypes releases the GIL for it)."""
    return "lc.llama_" in source_line(frame)


def part_of(frames: list[str]) -> str:
    leaf = source_line(frames[-1]) if frames else ""
    for part, keys in PARTS[:3]:
        if any(k in leaf for k in keys):
            return part
    for frame in reversed(frames):
        for part, keys in PARTS:
            if any(k in frame for k in keys):
                return part
    return "bookkeeping (plan, batch, stats)"


def engine_stacks(raw: Path) -> list[tuple[list[str], int]]:
    """The engine thread's stacks in py-spy's raw output, outermost frame first."""
    stacks = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if any(ENGINE in f for f in frames):
            stacks.append((frames, int(count)))
    return stacks


def spy(pyspy: str, pid: int, seconds: int, rate: int, out: Path, gil: bool) -> None:
    mode = ["--gil"] if gil else ["--idle"]
    subprocess.run(
        [pyspy, "record", "--pid", str(pid), "--subprocesses", *mode, "--threads", "--nonblocking"]
        + ["--rate", str(rate), "--duration", str(seconds), "--format", "raw", "--output", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Load:
    """N clients asking back to back until stopped; counts the tokens answered."""

    def __init__(self, base: str, clients: int, tokens: int) -> None:
        self.base, self.tokens, self.done, self.stop = base, tokens, 0, threading.Event()
        self.lock, self.n = threading.Lock(), 0
        self.threads = [threading.Thread(target=self._client, args=(c,), daemon=True) for c in range(clients)]
        for t in self.threads:
            t.start()

    def _client(self, c: int) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.n += 1
                i = self.n
            body = {
                "query": f"({c}.{i}) " + serve.question(i),
                "max_tokens": self.tokens,
                "temperature": 0,
                "repeat_penalty": 1.0,
                "ignore_eos": True,
                "stream": False,
            }
            r = requests.post(f"{self.base}/api/respond", json=body, timeout=600)
            r.raise_for_status()
            with self.lock:
                self.done += r.json()["usage"]["completion_tokens"]

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(600)


def profile(pid: int, base: str, clients: int, a, tmp: Path, pyspy: str) -> dict:
    load = Load(base, clients, a.tokens)
    try:
        time.sleep(a.warmup)
        before, t0 = load.done, time.perf_counter()
        spy(pyspy, pid, a.seconds, a.rate, tmp / f"all-{clients}.txt", gil=False)
        tps = (load.done - before) / (time.perf_counter() - t0)
        spy(pyspy, pid, a.seconds, a.rate, tmp / f"gil-{clients}.txt", gil=True)
    finally:
        load.close()
    every = engine_stacks(tmp / f"all-{clients}.txt")
    total = sum(n for _, n in every)
    parts: collections.Counter = collections.Counter()
    tops: collections.Counter = collections.Counter()
    in_python = 0
    for frames, n in every:
        parts[part_of(frames)] += n
        tops[frames[-1]] += n
        if not in_c(frames[-1]) and not any(k in frames[-1] for k in IDLE_LEAVES):
            in_python += n
    holding = sum(n for f, n in engine_stacks(tmp / f"gil-{clients}.txt") if not in_c(f[-1]))
    # Both passes sample for the same seconds at the same rate: per-second shares compare.
    expected = a.seconds * a.rate
    return {
        "clients": clients,
        "tokens_per_second_while_sampled": round(tps, 1),
        "engine_samples": total,
        "share": {p: round(n / total, 4) for p, n in parts.most_common()},
        "python_share": round(in_python / max(expected, total), 4),
        "python_holding_gil_share": round(holding / max(expected, total), 4),
        "gil_wait_share": round(max(in_python - holding, 0) / max(expected, total), 4),
        "top_frames": {f: round(n / total, 4) for f, n in tops.most_common(12)},
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--clients", default="1,8,16")
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--threads", type=int, default=serve.physical_cores())
    p.add_argument("--n-gpu-layers", default="0")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--note", default="")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        sys.exit("py-spy is not installed (pip install py-spy)")
    import os

    os.environ["LLAMA_SERVER_PARALLEL"] = str(a.parallel)
    opts = argparse.Namespace(
        n_ctx=1024,
        n_gpu_layers=a.n_gpu_layers,
        threads=a.threads,
        tokens=a.tokens,
        flash_attn="auto",
        vram_budget_mb=None,
    )
    proc, base, health = serve.start_server(a.model.resolve(), opts)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for clients in (int(c) for c in a.clients.split(",")):
                rows.append(profile(proc.pid, base, clients, a, Path(tmp), pyspy))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    doc = {
        "benchmark": "loop_profile",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": machine_info(),
        "model": a.model.name,
        "settings": {k: str(v) for k, v in vars(a).items() if k != "out"},
        "server_offload": health.get("offload"),
        "note": a.note,
        "rows": rows,
    }
    tmp_out = a.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(doc, indent=1) + "\n")
    tmp_out.replace(a.out)
    print_table(rows)
    return 0


def print_table(rows: list[dict]) -> None:
    parts = sorted({k for r in rows for k in r["share"]})
    print("| part | " + " | ".join(f"{r['clients']} clients" for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for part in parts:
        print(f"| {part} | " + " | ".join(f"{r['share'].get(part, 0):.1%}" for r in rows) + " |")
    for key in ("gil_wait_share", "tokens_per_second_while_sampled"):
        print(f"| {key} | " + " | ".join(str(r[key]) for r in rows) + " |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
