"""Concurrency benchmark: aggregate tokens/s and p50/p95 latency at 1, 2, 4 and 8 clients.

Side by side in one run, on the same model file and thread count:
  ours-pN          this server (gunicorn + engine) with LLAMA_SERVER_PARALLEL=N
  ours-p1          the same with one slot (requests served one at a time)
  ours-gthread-pN  ours-pN on gunicorn's plain gthread worker instead of the server's own
  ours-nospec-pN   ours-pN with SPECULATIVE=off, and
  ours-loose-pN    ours-pN with BATCH_INVARIANT=off: where a difference from llama-server comes from
  decoder-pN       the batching decoder in this process, no HTTP (its ceiling)
  llama-cpp-python `python -m llama_cpp.server`, installed here in its own venv
  llama-server-pN  llama.cpp's own server with N slots, built here from the llama.cpp
                   source that the pinned llama-cpp-python source package vendors
  llama-server-p1  the same with one slot
Each client sends `--requests` chat questions one after another (greedy, --max-tokens).
Aggregate tokens/s = completion tokens of all clients / wall time of the round. For the
servers run as processes, their own CPU time per completion token is recorded too: on a
machine shared with other work it moves much less than the wall-clock figures.

Equal work: every side is asked to ignore end of sequence (`ignore_eos`, llama-server's
field, which our /api/respond takes too; a logit bias on the end tokens for
llama-cpp-python's server), so each request generates exactly --max-tokens and every
side of a round generates the same tokens. The bench checks this per round and reports
it; a ratio is taken only from rounds where both of its sides did the same work, and a
run in which an `ignore_eos` side fell short exits with status 3. --keep-eos lets
answers end early and then counts only the rounds whose token counts are equal.

Spread: all servers are started first and stay up; then `--rounds` times, for each
client count, every server gets its round in turn (the order rotating), so load from
anything else on the machine falls on all columns alike. The table shows min / median /
max over the rounds per server, and per ratio (one ratio per round, from that round's
back-to-back runs) with a 95% interval of its median: a claim that one side is faster
stands only when that interval excludes 1 (bench/_spread.py), and the table says which
claims do. --budget-s stops starting rounds after that many seconds.
Every round asks the same questions, so a server's prompt cache (llama-server's
--cache-ram, our CACHE_RAM) may answer a repeated prompt from RAM; with
--fresh-questions each round's questions carry a new tag in front (same system
prompt), which measures batching without that help.

    python bench/concurrency.py                       # every server, default model
    python bench/concurrency.py --servers llama-server-pN,llama-cpp-python --model m.gguf
    python bench/concurrency.py --servers ours-pN,llama-server-pN --parallel 8 --n-gpu-layers -1 --no-plot

On a GPU, --n-gpu-layers and --flash-attn reach every column alike (our LLAMA_SERVER_N_GPU_LAYERS
and LLAMA_SERVER_FLASH_ATTN, the decoder's load, llama-server's -ngl and -fa); llama-server
must then be a CUDA build: link one at bench/.work/llama-server-<pin>/bin/llama-server.

Downloads and builds are cached under bench/.work/ (first run: ~10 min of compiling).
Results: bench/results/concurrency-<model>.json and .png (refuses to overwrite without --force).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _concurrency_report as report  # noqa: E402
import _spread  # noqa: E402
from _inprocess import InProcess, end_tokens  # noqa: E402
from _targets import (  # noqa: E402, F401
    LLAMA_SERVER,
    PIN,
    ROOT,
    TARGETS,
    WORK,
    Target,
    prepare_lcp_venv,
    stop_on_sigterm,
)

RESULTS = ROOT / "bench" / "results"
TOPICS = [
    "why the sky is blue",
    "how bread rises",
    "what a prime number is",
    "how tides work",
    "why leaves change colour",
    "how a bicycle stays up",
    "what causes thunder",
    "how vaccines work",
    "why ice floats",
    "how bees make honey",
]


# --- running one server --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float = 600) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def wait_ready(url: str, proc: subprocess.Popen, limit: float = 300) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {limit}s: {url}")


def run_round(
    t: Target,
    base: str,
    clients: int,
    per_client: int,
    max_tokens: int,
    ask: Callable[[dict], dict] | None = None,
    tag: str = "",
    extra: dict | None = None,
) -> dict:
    """One round: `clients` threads, each asking `per_client` questions in turn; `extra` goes into
    every body (what keeps this side from stopping at end of sequence)."""
    ask = ask or (lambda body: post(base + t.url, body))
    latencies: list[float] = []
    tokens = [0] * clients
    errors: list[str] = []
    short = [0] * clients  # answers with fewer tokens than asked for: they ended early

    def client(c: int) -> None:
        for k in range(per_client):
            question = f"{tag}In two sentences, explain {TOPICS[(c * per_client + k) % len(TOPICS)]}."
            t0 = time.perf_counter()
            try:
                n = t.tokens(ask({**t.body(question, max_tokens), **(extra or {})}))
            except Exception as exc:  # noqa: BLE001 - reported in the results
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t0)
            tokens[c] += n
            short[c] += n < max_tokens

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies) or [float("nan")]
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "completion_tokens": sum(tokens),
        "short_answers": sum(short),
        "wall_s": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "p50_s": round(statistics.median(lat), 3),
        "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
    }


class Served:
    """One server under test, started and kept up for the whole run."""

    def __init__(self, t: Target, args) -> None:
        self.t, self.proc, self.runner, self.log = t, None, None, None
        if t.name == "decoder-pN":
            self.runner = InProcess(
                args.model, args.parallel, args.threads, args.ctx, args.n_gpu_layers, args.flash_attn
            )
            self.ask = self.runner.ask
        else:
            t.prepare()
            port = free_port()
            argv, env = t.command(args.model, port, args)
            self.log = open(WORK / f"{t.name}.log", "w")
            self.proc = subprocess.Popen(
                [str(a) for a in argv],
                cwd=t.home(args),
                env={**os.environ, **env},
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            base = f"http://127.0.0.1:{port}"
            self.ask = lambda body: post(base + t.url, body)
            wait_ready(base + t.ready, self.proc)
        self.ask(t.body("Say hello.", 8))  # warm-up, not measured
        self.extra = self._eos_extra(args) if args.ignore_eos else {}

    def _eos_extra(self, args) -> dict:
        """What each body needs so that this side ignores end of sequence; {} where it cannot
        (its answers may then end early, which the per-round work check reports)."""
        if self.t.eos == "params":
            return {"ignore_eos": True} if self.runner.ignores_eos else {}
        if self.t.eos == "logit_bias":  # llama-cpp-python's server adds these to the logits
            return {"logit_bias": {str(tok): -1e9 for tok in end_tokens(args.model)}}
        try:  # asked, not assumed: a server without the field answers 400 naming it
            self.ask({**self.t.body("Say hello.", 1), "ignore_eos": True})
        except urllib.error.HTTPError as exc:
            if exc.code == 400 and "ignore_eos" in exc.read().decode(errors="replace"):
                print(f"{self.t.name}: does not take ignore_eos; its answers may end early", flush=True)
                return {}
            raise
        return {"ignore_eos": True}

    def round(self, clients: int, args, r: int) -> dict:
        # Fresh questions differ from every earlier round's (and from the other client counts').
        tag = f"({r + 1}.{clients}) " if args.fresh_questions else ""
        cpu = self.cpu_seconds()
        row = run_round(self.t, "", clients, args.requests, args.max_tokens, ask=self.ask, tag=tag, extra=self.extra)
        if cpu is not None:  # the server's own CPU time: what it costs, whatever else runs on the machine
            row["cpu_ms_per_token"] = round((self.cpu_seconds() - cpu) * 1000 / max(row["completion_tokens"], 1), 3)
        return {"server": self.t.name, **row}

    def cpu_seconds(self) -> float | None:
        """CPU time (user + system) of the server's processes so far; None when it runs in here."""
        if self.proc is None:
            return None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[2]) == self.proc.pid:  # its process group: the server and its workers
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.log.close()


def bench_all(names: list[str], args) -> tuple[list[dict], dict[str, bool]]:
    """(every round's rows, which sides ignored end of sequence): rounds interleave the servers, see
    the docstring; after --budget-s no new round starts, so a round always covers every client count."""
    served: list[Served] = []
    raw: list[dict] = []
    try:
        for name in names:
            served.append(Served(TARGETS[name], args))
        t0 = time.monotonic()
        for r in range(args.rounds):
            if r and args.budget_s and time.monotonic() - t0 > args.budget_s:
                print(f"budget of {args.budget_s}s spent: stopping after {r} rounds", flush=True)
                break
            for clients in args.clients:
                k = r % len(served)
                for s in served[k:] + served[:k]:
                    row = {"round": r, **s.round(clients, args, r)}
                    raw.append(row)
                    print(
                        f"round {r}  {row['server']:18} {clients:>3} clients  {row['tokens_per_s']:8.2f} t/s  "
                        f"{row['completion_tokens']:6} tokens  p50 {row['p50_s']:6.2f}s  "
                        f"errors {row['errors']}",
                        flush=True,
                    )
    finally:
        for s in served:
            s.close()
    return raw, {s.t.name: bool(s.extra) for s in served}


def summarize(raw: list[dict], names: list[str], clients: list[int]) -> list[dict]:
    """Per server and client count: medians, and min / median / max of tokens/s over the rounds."""
    rows = []
    for name in names:
        for c in clients:
            runs = [r for r in raw if r["server"] == name and r["clients"] == c]
            row = {
                "server": name,
                "clients": c,
                "rounds": len(runs),
                "requests": sum(r["requests"] for r in runs),
                "errors": sum(r["errors"] for r in runs),
                "short_answers": sum(r["short_answers"] for r in runs),
            }
            for key in ("completion_tokens", "wall_s", "tokens_per_s", "p50_s", "p95_s"):
                row[key] = statistics.median(r[key] for r in runs)
            row["tokens_per_s_spread"] = _spread.spread((r["tokens_per_s"] for r in runs), 2)
            if all("cpu_ms_per_token" in r for r in runs):
                row["cpu_ms_per_token_spread"] = _spread.spread((r["cpu_ms_per_token"] for r in runs), 3)
            row["completion_tokens_seen"] = sorted({r["completion_tokens"] for r in runs})
            rows.append(row)
    return rows


# --- results ------------------------------------------------------------------------
def _gpu_info() -> dict:
    """What GPU the run used (bench/gpu/_gpuinfo.py: nvidia-smi and nvcc; empty values without them)."""
    sys.path.insert(0, str(ROOT / "bench" / "gpu"))
    from _gpuinfo import gpu_info

    return gpu_info()


def commits(args) -> dict:
    """The commits measured: this tree (with '+' when its server/ has uncommitted changes) and --before's."""

    def commit(tree: Path) -> str:
        git = ["git", "-C", str(tree)]
        if (tree / "COMMIT").is_file():  # a copy of the server without its own .git (a GPU run's bundle)
            return (tree / "COMMIT").read_text().strip()
        head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(git + ["status", "--porcelain", "--", "server"], capture_output=True, text=True).stdout
        return head + ("+" if dirty.strip() else "")

    return {"ours": commit(ROOT), **({"before": commit(args.before)} if args.before else {})}


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: the server's default model)")
    ap.add_argument(
        "--servers",
        default=",".join(n for n in TARGETS if n != "before-pN"),
        help="comma list of " + ", ".join(TARGETS) + " (before-pN needs --before)",
    )
    ap.add_argument("--before", type=Path, help="another checkout of this server, for the before-pN column")
    ap.add_argument("--clients", default="1,2,4,8", type=lambda t: [int(c) for c in t.split(",")])
    ap.add_argument("--parallel", type=int, default=4, help="slots for the -pN servers")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per round")
    ap.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="rounds over every server and client count (15: a 95%% interval of the median ratio "
        "from the 4th to the 12th of them)",
    )
    ap.add_argument("--budget-s", type=float, help="start no new round after this many seconds (at least one runs)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--keep-eos",
        dest="ignore_eos",
        action="store_false",
        help="let answers end at end of sequence (then only rounds of equal token counts are compared)",
    )
    ap.add_argument(
        "--fresh-questions",
        action="store_true",
        help="new questions every round, so no prompt is ever repeated (no prompt-cache hits)",
    )
    ap.add_argument("--ctx", type=int, default=2048, help="context per request (per slot)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="layers on the GPU for every server (-1: all)")
    ap.add_argument(
        "--flash-attn",
        choices=("auto", "on", "off"),
        default="auto",
        help="flash attention for every server (llama.cpp's auto turns it on where supported)",
    )
    ap.add_argument(
        "--no-plot",
        action="store_true",
        help="skip the PNG (it needs the llama-cpp-python venv, so PyPI); make it later with "
        "that venv's python: bench/_plot.py JSON PNG",
    )
    ap.add_argument("--out", type=Path, help="results JSON (default: bench/results/concurrency-<model>.json)")
    ap.add_argument("--force", action="store_true", help="overwrite existing results")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from server.model.files import resolve_model

        args.model = resolve_model(None).path
    args.model = args.model.resolve()
    out = args.out or RESULTS / f"concurrency-{args.model.stem}.json"
    if out.exists() and not args.force:
        print(f"{out} exists; rerun with --force to replace it (or --out elsewhere)", file=sys.stderr)
        return 1
    names = [n for n in args.servers.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if "before-pN" in names and not (args.before and (args.before / "server").is_dir()):
        print("before-pN needs --before DIR, a checkout of this server (with its .venv)", file=sys.stderr)
        return 2
    if unknown:
        print(f"unknown servers {unknown}; choose from {list(TARGETS)}", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()  # other work on the machine skews every column: record it
    raw, ignoring = bench_all(names, args)
    rows = summarize(raw, names, args.clients)
    claims = {c: report.ratio_claims(raw, names, c) for c in args.clients}
    expected = {c: c * args.requests * args.max_tokens for c in args.clients} if args.ignore_eos else None
    work = report.work_summary(raw, ignoring, expected)
    report.print_table(rows, claims, work, args.clients)
    for r in (r for r in rows if "cpu_ms_per_token_spread" in r):
        cpu = r["cpu_ms_per_token_spread"]
        print(
            f"server CPU per completion token, {r['server']} at {r['clients']} clients: "
            f"{cpu['median']} ms [{cpu['min']}-{cpu['max']}] over {cpu['n']} rounds"
        )
    doc = {
        "model": args.model.name,
        "model_bytes": args.model.stat().st_size,
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "llama_cpp_python": PIN,
        "command": "bench/concurrency.py " + " ".join(argv),
        "commits": commits(args),
        "gpu": _gpu_info() if args.n_gpu_layers else None,
        "settings": {
            **{
                k: v
                for k, v in vars(args).items()
                if k
                in (
                    "parallel",
                    "requests",
                    "max_tokens",
                    "ctx",
                    "threads",
                    "clients",
                    "n_gpu_layers",
                    "flash_attn",
                    "fresh_questions",
                    "ignore_eos",
                    "budget_s",
                )
            },
            "rounds": max((r["round"] + 1 for r in raw), default=0),
            "rounds_asked": args.rounds,
        },
        "method": "rounds interleave the servers (order rotating); tokens/s per server as median [min-max] "
        "over rounds; each ratio taken per round from that round's back-to-back runs, only where "
        "both sides generated the same completion tokens; a claim stands where the 95% "
        "order-statistic interval of the median ratio excludes 1",
        "equal_work": work,
        "rows": rows,
        "ratios_by_clients": {c: {p: cl["median"] for p, cl in claims[c].items()} for c in args.clients},
        "ratio_spread_by_clients": claims,
        "rounds": raw,
    }
    doc["ratios_at_4_clients"] = doc["ratios_by_clients"].get(4, {})
    write_atomic(out, json.dumps(doc, indent=1).encode())
    status = 0 if work["ok"] or not args.ignore_eos else 3
    if status:
        print(
            "UNEQUAL WORK: a side asked to ignore end of sequence generated other token counts than the "
            "rest (see equal_work in the results)",
            file=sys.stderr,
        )
    if args.no_plot:
        print(f"wrote {out}")
        return status
    png = out.with_suffix(".png")
    subprocess.run([str(prepare_lcp_venv()), str(Path(__file__).with_name("_plot.py")), str(out), str(png)], check=True)
    print(f"wrote {out} and {png}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
