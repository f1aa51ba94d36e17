"""The model library against llama-server's router (`--models-dir`, same files, same slots), side by side.

    .venv/bin/python bench/models.py                 # SmolLM2 and Gemma 3 from PyPI, and a copy of SmolLM2
    .venv/bin/python bench/models.py --rounds 7

Three figures, each on fresh servers and prompts never sent before:
- cold: a request naming a model that is not loaded, to its first token (files in the page
  cache), ours / llama-server router per round, interleaved;
- switch: two clients taking turns on two models that both fit: decode tokens/s of each model
  when it follows the other against when it follows itself (the model alone), on the same server
  and in the same rounds, and how many loads each server made;
- budget: RAM_BUDGET_MB for two of the three models, two clients rotating over all three: every
  answer arrives, none is refused, and the server's peak RSS (every process of it) against the
  budget; llama-server's router with --models-max 2 beside it, for the record.
Writes bench/results/models-cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
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

from bench._measure import machine_info, warm_page_cache  # noqa: E402
from bench._spread import claim, spread  # noqa: E402
from bench._targets import LLAMA_SERVER, prepare_llama_server, stop_on_sigterm  # noqa: E402
from server.model.files import ensure_gemma, ensure_smollm2  # noqa: E402

WORK = ROOT / "bench" / ".work" / "models-library"
NAMES = ("smollm2-135m-instruct-q4_1", "gemma-3-270m-q4_k_m", "smollm2-copy")


def library_folder() -> Path:
    """SmolLM2, Gemma 3 and a second file of SmolLM2 (three models; the third is a copy, not a link)."""
    WORK.mkdir(parents=True, exist_ok=True)
    for name, source in zip(NAMES, (ensure_smollm2(), ensure_gemma(), ensure_smollm2())):
        target = WORK / f"{name}.gguf"
        if not target.exists():
            shutil.copyfile(source, target.with_suffix(".partial"))
            os.replace(target.with_suffix(".partial"), target)
    return WORK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server (ours or llama-server's router) over the folder, started fresh, stopped after."""

    def __init__(
        self, side: str, folder: Path, a: argparse.Namespace, budget_mb: int | None = None, most: int = 4, cache=None
    ):
        self.side, self.port = side, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = open(WORK / f"{side}.log", "w")
        if side == "ours":
            env = {
                **os.environ,
                "LLAMA_SERVER_MODELS_DIR": str(folder),
                "LLAMA_SERVER_DEFAULT_MODEL": NAMES[0],
                "LLAMA_SERVER_PORT": str(self.port),
                "LLAMA_SERVER_PARALLEL": str(a.parallel),
                "LLAMA_SERVER_N_CTX": str(a.ctx),
                "LLAMA_SERVER_N_THREADS": str(a.threads),
                "LLAMA_SERVER_MAX_TOKENS_CEILING": "4096",
                **({"LLAMA_SERVER_RAM_BUDGET_MB": str(budget_mb)} if budget_mb else {}),
                **({"LLAMA_SERVER_CACHE_RAM": str(cache)} if cache is not None else {}),
            }
            cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "server"]
        else:
            env = dict(os.environ)
            cmd = [str(LLAMA_SERVER), "--models-dir", str(folder), "--models-max", str(most)]
            cmd += ["--host", "127.0.0.1", "--port", str(self.port), "-np", str(a.parallel)]
            cmd += ["-c", str(a.parallel * a.ctx), "-t", str(a.threads), "-tb", str(a.threads)]
            cmd += ["--cache-ram", str(cache)] if cache is not None else []
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_up()

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 240
        path = "/api/health" if self.side == "ours" else "/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.side} exited: see {self.log.name}")
            try:
                if requests.get(self.base + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.side} did not start")

    def rss(self) -> int:
        """Resident bytes of the server and every process under it (llama-server's router has children)."""
        return sum(_rss(pid) for pid in _tree(self.proc.pid))

    def loads(self) -> int:
        text = Path(self.log.name).read_text(errors="replace")
        return text.count("server: loaded ") if self.side == "ours" else text.count("spawning server instance")

    def stop(self) -> None:
        for pid in reversed(_tree(self.proc.pid)):
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _tree(pid: int) -> list[int]:
    pids, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == parent:
                        pids.append(int(entry.name))
                        frontier.append(int(entry.name))
                except (OSError, ValueError, IndexError):
                    continue
    return pids


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def ask(server: Server, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed chat answer of exactly `max_tokens` tokens (end of text ignored, on both sides):
    status, time to first token, decode tokens/s (the tokens after the first, over the time after it)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started, first, last, tokens = time.monotonic(), None, None, None
    with requests.post(server.base + "/v1/chat/completions", json=body, stream=True, timeout=600) as r:
        if r.status_code != 200:
            return {"status": r.status_code, "error": r.text[:200]}
        for line in r.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            delta = (chunk.get("choices") or [{}])[0].get("delta", {})
            if delta.get("content"):
                last = time.monotonic()
                first = first or last
    if first is None:
        return {"status": 200, "ttft_s": None, "tokens_per_s": None}
    rate = (tokens - 1) / (last - first) if tokens and tokens > 1 and last > first else None
    return {"status": 200, "ttft_s": first - started, "tokens_per_s": rate, "tokens": tokens}


TOPICS = (
    "rivers",
    "bread",
    "comets",
    "violins",
    "glaciers",
    "owls",
    "copper",
    "tides",
    "maps",
    "ferns",
    "kites",
    "salt",
    "deserts",
    "bees",
    "lanterns",
    "coral",
    "clocks",
    "moss",
    "harbors",
    "volcanoes",
)
_asked = itertools.count()


def prompt(kind: str, n: int) -> str:
    """A prompt no server has seen, on a topic of its own: answers that copy an earlier one would let
    speculative decoding's n-gram pool draft them, which is not what a new request gets."""
    i = next(_asked)
    return f"[{kind} {n}/{i} {time.time_ns()}] Write a short poem about {TOPICS[i % len(TOPICS)]} and the number {i}."


def cold(folder: Path, a: argparse.Namespace) -> dict:
    ratios, rows = [], []
    for r in range(a.rounds):
        got = {}
        for side in ("ours", "llama-server") if r % 2 == 0 else ("llama-server", "ours"):
            server = Server(side, folder, a)
            try:
                warm_page_cache([folder / f"{NAMES[1]}.gguf"])
                got[side] = ask(server, NAMES[1], prompt("cold", r), 8)
            finally:
                server.stop()
        rows.append(got)
        if all(g.get("ttft_s") for g in got.values()):
            ratios.append(got["ours"]["ttft_s"] / got["llama-server"]["ttft_s"])
    return {
        "rounds": rows,
        "ours_ttft_s": spread(g["ours"].get("ttft_s") for g in rows),
        "llama_server_ttft_s": spread(g["llama-server"].get("ttft_s") for g in rows),
        # A ratio of times: below 1, ours is first sooner. The claim reads it as a ratio of speeds.
        "ratio": claim(ratios, "ours (time)", "llama-server router (time)"),
        "speed": claim([1 / r for r in ratios], "ours", "llama-server router"),
    }


def switch(folder: Path, a: argparse.Namespace) -> dict:
    """Per round, on one server with both models loaded: each model asked twice in a row (the second
    answer is the model "alone": it follows itself), then the two taking turns (each answer follows
    the other model). Decode tokens/s of each, and the loads the server made meanwhile."""
    a_, b_ = NAMES[:2]
    out = {}
    for side in ("ours", "llama-server"):
        server = Server(side, folder, a)
        try:
            for model in (a_, b_):
                ask(server, model, prompt("warm", 0), 4)  # both loaded before anything is timed
            loads_before = server.loads()
            alone: dict[str, list[dict]] = {a_: [], b_: []}
            turns: dict[str, list[dict]] = {a_: [], b_: []}
            for r in range(a.turns):
                for model in (a_, b_):
                    ask(server, model, prompt(f"alone-{model}-first", r), a.max_tokens)
                    alone[model].append(ask(server, model, prompt(f"alone-{model}", r), a.max_tokens))
                for model in (a_, b_, a_, b_):
                    turns[model].append(
                        ask(server, model, prompt(f"turns-{model}-{len(turns[model])}", r), a.max_tokens)
                    )
            out[side] = {
                "reloads_while_switching": server.loads() - loads_before,
                **{
                    m: {
                        "alone_tokens_per_s": spread(x.get("tokens_per_s") for x in alone[m]),
                        "switching_tokens_per_s": spread(x.get("tokens_per_s") for x in turns[m]),
                        "ratio": round(_median(turns[m]) / _median(alone[m]), 3),
                    }
                    for m in (a_, b_)
                },
            }
        finally:
            server.stop()
    return out


def _median(answers: list[dict]) -> float:
    return statistics.median(x["tokens_per_s"] for x in answers if x.get("tokens_per_s"))


BUDGET_CACHE_MIB = 64  # both sides' prompt cache in RAM, in the budget run: its limit counts in a reservation


def budget(folder: Path, a: argparse.Namespace) -> dict:
    probe = Server("ours", folder, a, cache=BUDGET_CACHE_MIB)
    try:
        for model in NAMES[:2]:
            ask(probe, model, prompt("probe", 0), 2)
        sizes = {m["name"]: m["memory"]["ram"] + m["memory"]["cache_ram"] for m in _health(probe)["models"]}
    finally:
        probe.stop()
    # Room for the default (SmolLM2, pinned) and Gemma, the larger of the others, with 5% to spare.
    budget_mb = int((sizes[NAMES[0]] + sizes[NAMES[1]]) * 1.05) >> 20
    out = {"budget_mb": budget_mb, "cache_ram_mib": BUDGET_CACHE_MIB}
    for side in ("ours", "llama-server"):
        server = Server(side, folder, a, budget_mb=budget_mb, most=2, cache=BUDGET_CACHE_MIB)
        try:
            out[side] = rotate(server, a)
        finally:
            server.stop()
    out["ours"]["peak_under_budget"] = out["ours"]["peak_rss_mb"] <= budget_mb
    return out


def rotate(server: Server, a: argparse.Namespace) -> dict:
    """Two clients going round the three models at once, the server's RSS sampled all along."""
    peak, done, answers = [server.rss()], threading.Event(), []

    def sample() -> None:
        while not done.is_set():
            peak.append(server.rss())
            time.sleep(0.05)

    def client(offset: int) -> None:
        for i in range(a.rotations * 3):
            answers.append(ask(server, NAMES[(i + offset) % 3], prompt(f"budget-{offset}", i), 16))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    for c in clients:
        c.start()
    for c in clients:
        c.join()
    done.set()
    sampler.join()
    return {
        "answers": len(answers),
        "ok": sum(x["status"] == 200 for x in answers),
        "refused": [x for x in answers if x["status"] != 200][:5],
        "peak_rss_mb": max(peak) >> 20,
        "loads": server.loads(),
    }


def _health(server: Server) -> dict:
    return requests.get(server.base + "/api/health", timeout=5).json()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="cold-load rounds (fresh servers each)")
    p.add_argument("--turns", type=int, default=5, help="rounds of the switching test")
    p.add_argument("--rotations", type=int, default=3, help="times each client goes round the three models")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--only", choices=("cold", "switch", "budget"), help="one figure alone (a trial: no table)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "models-cpu.json")
    a = p.parse_args()
    stop_on_sigterm()
    prepare_llama_server()
    folder = library_folder()
    if a.only:
        print(json.dumps({"cold": cold, "switch": switch, "budget": budget}[a.only](folder, a), indent=1))
        return 0
    results = {
        "command": "bench/models.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        # Paths relative to the checkout: results never name the machine they ran on.
        "settings": {
            k: str(v.relative_to(ROOT) if isinstance(v, Path) and v.is_relative_to(ROOT) else v)
            for k, v in vars(a).items()
        },
        "cold": cold(folder, a),
        "switch": switch(folder, a),
        "budget": budget(folder, a),
    }
    a.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


def table(r: dict) -> str:
    c, s, b = r["cold"], r["switch"], r["budget"]
    lines = [
        "| figure | ours | llama-server router | ours / llama-server |",
        "|---|---|---|---|",
        f"| cold load to first token, s (median) | {c['ours_ttft_s']['median']} | "
        f"{c['llama_server_ttft_s']['median']} | {c['ratio']['median']} ({c['ratio']['min']}-{c['ratio']['max']}) |",
    ]
    for m in NAMES[:2]:
        lines.append(
            f"| {m}: tokens/s switching / alone | {s['ours'][m]['ratio']} | {s['llama-server'][m]['ratio']} | |"
        )
    lines.append(
        f"| reloads while switching | {s['ours']['reloads_while_switching']} | "
        f"{s['llama-server']['reloads_while_switching']} | |"
    )
    lines.append(
        f"| budget {b['budget_mb']} MiB: answers ok / sent, peak RSS MiB | {b['ours']['ok']}/{b['ours']['answers']}, "
        f"{b['ours']['peak_rss_mb']} | {b['llama-server']['ok']}/{b['llama-server']['answers']}, "
        f"{b['llama-server']['peak_rss_mb']} (--models-max 2) | |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
