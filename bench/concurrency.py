"""Concurrency benchmark: aggregate tokens/s and p50/p95 latency at 1, 2, 4 and 8 clients.

Side by side in one run, on the same model file and thread count:
  ours-pN          this server (gunicorn + engine) with LLAMA_SERVER_PARALLEL=N
  ours-p1          the same with one slot (requests served one at a time)
  base-pN          ours-pN from another checkout (--base-tree), e.g. before a change
  decoder-pN       the batching decoder in this process, no HTTP (its ceiling)
  llama-cpp-python `python -m llama_cpp.server`, installed here in its own venv
  llama-server-pN  llama.cpp's own server with N slots, built here from the llama.cpp
                   source that the pinned llama-cpp-python source package vendors
  llama-server-p1  the same with one slot
Each client sends `--requests` chat questions one after another (greedy, --max-tokens).
Aggregate tokens/s = completion tokens of all clients / wall time of the round.
Every round asks the same questions, so a server's prompt cache (llama-server's
--cache-ram, our CACHE_RAM) may answer a repeated prompt from RAM; with
--fresh-questions each round's questions carry a new tag in front (same system
prompt), which measures batching without that help.
All servers are started first and stay up; then `--rounds` times, for each client
count, every server gets its round in turn (the order rotating), so load from
anything else on the machine falls on all columns alike. The table shows medians
over the rounds.

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
import tarfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
RESULTS = ROOT / "bench" / "results"
PIN = next(
    line.split("==")[1].strip()
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if line.startswith("llama-cpp-python==")
)
SRC = WORK / "src" / f"llama_cpp_python-{PIN}"
LLAMA_SERVER = WORK / f"llama-server-{PIN}" / "bin" / "llama-server"
LCP_VENV = WORK / f"llama-cpp-python-{PIN}-venv"
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


def sh(argv: list, **kw) -> None:
    print("+", " ".join(map(str, argv)), flush=True)
    subprocess.run([str(a) for a in argv], check=True, **kw)


# --- preparing the two reference servers (cached) ------------------------------------
def prepare_llama_server() -> Path:
    """Build llama-server from the llama.cpp sources vendored by the pinned sdist."""
    if LLAMA_SERVER.exists():
        return LLAMA_SERVER
    if not SRC.exists():
        sh(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={PIN}",
                "-d",
                WORK / "src",
            ]
        )
        with tarfile.open(WORK / "src" / f"llama_cpp_python-{PIN}.tar.gz") as tar:
            tar.extractall(WORK / "src", filter="data")
    build = LLAMA_SERVER.parent.parent
    # No web UI download (offline machines) and no TLS: only the HTTP API is measured.
    sh(
        [
            "cmake",
            "-S",
            SRC / "vendor" / "llama.cpp",
            "-B",
            build,
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ]
    )
    sh(["cmake", "--build", build, "--target", "llama-server", "-j", str(os.cpu_count() or 2)])
    return LLAMA_SERVER


def prepare_lcp_venv() -> Path:
    """A separate venv with llama-cpp-python's own server (and matplotlib for the plot)."""
    python = LCP_VENV / "bin" / "python"
    marker = LCP_VENV / ".installed"
    if not marker.exists():
        sh([sys.executable, "-m", "venv", LCP_VENV])
        sh([python, "-m", "pip", "install", "-q", f"llama-cpp-python[server]=={PIN}", "matplotlib"])
        marker.touch()
    return python


# --- the servers under test: how to start each and how to ask it ------------------------
@dataclass(frozen=True)
class Target:
    name: str
    prepare: Callable[[], object]
    command: Callable[[Path, int, argparse.Namespace], tuple[list, dict]]  # model, port, args
    url: str  # POST path
    ready: str  # GET path answering 200 once the model is loaded
    body: Callable[[str, int], dict]
    tokens: Callable[[dict], int]


# Every server gets the same system prompt and question, for equal prompt work.
SYSTEM = "You are a helpful, respectful and honest assistant."


# Greedy, no repeat penalty, everywhere: the same sampling work on every server.
def _chat(question: str, max_tokens: int) -> dict:
    return {
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
    }


def _ours_body(question: str, max_tokens: int) -> dict:
    return {
        "query": question,
        "system": SYSTEM,
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,
        "stream": False,
    }


def _ours(fixed_slots: int | None):
    def command(model, port, a):
        env = dict(
            LLAMA_SERVER_MODEL=str(model),
            LLAMA_SERVER_PORT=str(port),
            LLAMA_SERVER_PARALLEL=str(fixed_slots or a.parallel),
            LLAMA_SERVER_N_THREADS=str(a.threads),
            LLAMA_SERVER_N_CTX=str(a.ctx),
            LLAMA_SERVER_N_GPU_LAYERS=str(a.n_gpu_layers),
            LLAMA_SERVER_FLASH_ATTN=a.flash_attn,
        )
        return [
            ROOT / ".venv" / "bin" / "gunicorn",
            "-c",
            "server/gunicorn.conf.py",
            "server.http.app:create_app()",
        ], env

    return command


def _llama_server(fixed_slots: int | None):
    def command(model, port, a):
        n = fixed_slots or a.parallel
        # -ngl -1 is llama.cpp's "all layers", as in our setting.
        return [
            LLAMA_SERVER,
            "-m",
            model,
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "-np",
            n,
            "-c",
            n * a.ctx,
            "-t",
            a.threads,
            "-tb",
            a.threads,
            "-ngl",
            a.n_gpu_layers,
            "-fa",
            a.flash_attn,
        ], {}

    return command


def _lcp(model, port, a):
    # interrupt_requests off: by default a new request cancels the running one. Its flash_attn
    # is a plain bool: "auto" means on, as llama.cpp's auto resolves on CPU and CUDA alike.
    return [
        LCP_VENV / "bin" / "python",
        "-m",
        "llama_cpp.server",
        "--model",
        model,
        "--host",
        "127.0.0.1",
        "--port",
        port,
        "--n_ctx",
        a.ctx,
        "--n_threads",
        a.threads,
        "--n_threads_batch",
        a.threads,
        "--interrupt_requests",
        "False",
        "--n_gpu_layers",
        a.n_gpu_layers,
        "--flash_attn",
        str(a.flash_attn != "off"),
    ], {}


_usage = lambda r: int(r["usage"]["completion_tokens"])  # noqa: E731
TARGETS = {
    t.name: t
    for t in [
        Target("ours-pN", lambda: None, _ours(None), "/api/respond", "/api/health", _ours_body, _usage),
        Target("ours-p1", lambda: None, _ours(1), "/api/respond", "/api/health", _ours_body, _usage),
        Target("base-pN", lambda: None, _ours(None), "/api/respond", "/api/health", _ours_body, _usage),
        Target("decoder-pN", lambda: None, None, "", "", _chat, _usage),  # in-process, see InProcess
        Target("llama-cpp-python", prepare_lcp_venv, _lcp, "/v1/chat/completions", "/v1/models", _chat, _usage),
        Target(
            "llama-server-pN",
            prepare_llama_server,
            _llama_server(None),
            "/v1/chat/completions",
            "/health",
            _chat,
            _usage,
        ),
        Target(
            "llama-server-p1", prepare_llama_server, _llama_server(1), "/v1/chat/completions", "/health", _chat, _usage
        ),
    ]
}


def ours_is_batched() -> bool:
    """Our columns mean something only once the engine drives the batching decoder."""
    return any(
        "BatchDecoder" in (ROOT / "server" / f).read_text()
        for f in ("engine.py", "decoder.py")
        if (ROOT / "server" / f).exists()
    )


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
) -> dict:
    ask = ask or (lambda body: post(base + t.url, body))
    latencies: list[float] = []
    tokens = [0] * clients
    errors: list[str] = []

    def client(c: int) -> None:
        for k in range(per_client):
            question = f"{tag}In two sentences, explain {TOPICS[(c * per_client + k) % len(TOPICS)]}."
            t0 = time.perf_counter()
            try:
                tokens[c] += t.tokens(ask(t.body(question, max_tokens)))
            except Exception as exc:  # noqa: BLE001 - reported in the results
                errors.append(type(exc).__name__)
                continue
            latencies.append(time.perf_counter() - t0)

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
        "wall_s": round(wall, 3),
        "tokens_per_s": round(sum(tokens) / wall, 2),
        "p50_s": round(statistics.median(lat), 3),
        "p95_s": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 3),
    }


class InProcess:
    """The batching decoder driven directly by one stepping thread, no HTTP: what the
    engine can reach at best. Prompts are built as our server builds them (its chat
    format and vocabulary code); clients block on their sequence's Ended event."""

    def __init__(
        self, model: Path, slots: int, threads: int, ctx: int, n_gpu_layers: int = 0, flash_attn: str = "auto"
    ) -> None:
        sys.path.insert(0, str(ROOT))
        from server.engine.batching import BatchDecoder
        from server.engine.loading import vocab_of
        from server.model.describe import chat_template
        from server.model.prompt import choose_format
        from server.settings import Settings

        self.decoder = BatchDecoder.load(
            model,
            n_parallel=slots,
            n_ctx_per_seq=ctx,
            n_threads=threads,
            n_gpu_layers=n_gpu_layers,
            flash_attn=flash_attn,
        )
        self.vocab = vocab_of(self.decoder)
        self.format = choose_format(chat_template(Settings(), self.decoder.metadata())[0])
        self.lock, self.stop = threading.Condition(), False
        self.driver = threading.Thread(target=self._drive, daemon=True)
        self.driver.start()

    def _drive(self) -> None:
        while not self.stop:
            with self.lock:  # sleep while idle; ask() adds under the lock, so no wake-up is missed
                while self.decoder.idle and not self.stop:
                    self.lock.wait()
            self.decoder.step()

    def ask(self, body: dict) -> dict:
        from server.engine.batching import Ended, SamplingParams
        from server.model.prompt import Message

        tokens = self.format.tokens([Message(m["role"], m["content"]) for m in body["messages"]], self.vocab)
        done = threading.Event()
        result = {}

        def on_event(ev) -> None:
            if isinstance(ev, Ended):
                result["usage"] = {"completion_tokens": ev.usage.completion_tokens}
                done.set()

        params = SamplingParams(temperature=0, repeat_penalty=body["repeat_penalty"], max_tokens=body["max_tokens"])
        with self.lock:
            self.decoder.add(tokens, params, on_event)
            self.lock.notify()
        done.wait()
        return result

    def close(self) -> None:
        with self.lock:
            self.stop = True
            self.lock.notify()
        self.driver.join()
        self.decoder.close()


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
                cwd=args.base_tree if t.name == "base-pN" else ROOT,  # the same venv, its own server code
                env={**os.environ, **env},
                stdout=self.log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            base = f"http://127.0.0.1:{port}"
            self.ask = lambda body: post(base + t.url, body)
            wait_ready(base + t.ready, self.proc)
        self.ask(t.body("Say hello.", 8))  # warm-up, not measured

    def round(self, clients: int, args, r: int) -> dict:
        # Fresh questions differ from every earlier round's (and from the other client counts').
        tag = f"({r + 1}.{clients}) " if args.fresh_questions else ""
        row = run_round(self.t, "", clients, args.requests, args.max_tokens, ask=self.ask, tag=tag)
        return {"server": self.t.name, **row}

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


def bench_all(names: list[str], args) -> tuple[list[dict], list[dict]]:
    """(median rows, every round's rows): rounds interleave the servers, see the docstring."""
    served: list[Served] = []
    raw: list[dict] = []
    try:
        for name in names:
            served.append(Served(TARGETS[name], args))
        for r in range(args.rounds):
            for clients in args.clients:
                k = r % len(served)
                for s in served[k:] + served[:k]:
                    row = {"round": r, **s.round(clients, args, r)}
                    raw.append(row)
                    print(
                        f"round {r}  {row['server']:18} {clients:>3} clients  {row['tokens_per_s']:8.2f} t/s  "
                        f"p50 {row['p50_s']:6.2f}s  p95 {row['p95_s']:6.2f}s  errors {row['errors']}",
                        flush=True,
                    )
    finally:
        for s in served:
            s.close()
    return medians(raw, names, args.clients), raw


def medians(raw: list[dict], names: list[str], clients: list[int]) -> list[dict]:
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
            }
            for key in ("completion_tokens", "wall_s", "tokens_per_s", "p50_s", "p95_s"):
                row[key] = statistics.median(r[key] for r in runs)
            rows.append(row)
    return rows


# --- results ------------------------------------------------------------------------
def print_table(rows: list[dict], clients: list[int]) -> None:
    servers = list(dict.fromkeys(r["server"] for r in rows))
    print("\naggregate tokens/s (p50 latency s) by concurrent clients, medians over rounds")
    print(f"{'server':18}" + "".join(f"{c:>18}" for c in clients))
    for name in servers:
        cells = {r["clients"]: f"{r['tokens_per_s']:.1f} ({r['p50_s']:.1f})" for r in rows if r["server"] == name}
        print(f"{name:18}" + "".join(f"{cells.get(c, '-'):>18}" for c in clients))


def ratios(rows: list[dict], at: int) -> dict:
    """Throughput ratios at `at` clients, measured in this same run."""
    tps = {r["server"]: r["tokens_per_s"] for r in rows if r["clients"] == at}
    pairs = [
        ("ours-pN", "llama-server-pN"),
        ("ours-pN", "llama-cpp-python"),
        ("decoder-pN", "llama-server-pN"),
        ("decoder-pN", "llama-cpp-python"),
        ("ours-pN", "ours-p1"),
        ("ours-pN", "base-pN"),
        ("llama-server-pN", "llama-server-p1"),
    ]
    return {f"{a}/{b}": round(tps[a] / tps[b], 3) for a, b in pairs if tps.get(a) and tps.get(b)}


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plot(json_path: Path, png_path: Path) -> None:
    """Throughput against clients, one line per server (runs in the venv that has matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc = json.loads(json_path.read_text())
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["server"] for r in doc["rows"]):
        pts = [(r["clients"], r["tokens_per_s"]) for r in doc["rows"] if r["server"] == name]
        ax.plot(*zip(*pts), marker="o", label=name)
    ax.set(
        xlabel="concurrent clients",
        ylabel="aggregate tokens/s",
        xscale="log",
        title=f"{doc['model']} - {doc['settings']['parallel']} slots, {doc['host']['cpus']} CPUs",
    )
    ax.set_xticks(doc["settings"]["clients"], [str(c) for c in doc["settings"]["clients"]])
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = png_path.with_name(png_path.stem + ".partial.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, png_path)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: the server's default model)")
    ap.add_argument(
        "--servers",
        default=",".join(n for n in TARGETS if n != "base-pN"),
        help="comma list of " + ", ".join(TARGETS),
    )
    ap.add_argument("--clients", default="1,2,4,8", type=lambda t: [int(c) for c in t.split(",")])
    ap.add_argument("--parallel", type=int, default=4, help="slots for the -pN servers")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every server and client count")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument(
        "--fresh-questions",
        action="store_true",
        help="new questions every round, so no prompt is ever repeated (no prompt-cache hits)",
    )
    ap.add_argument(
        "--base-tree",
        type=Path,
        help="a checkout of this project (e.g. git archive of an older commit) served as base-pN",
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
        "the same venv: concurrency.py --plot JSON PNG",
    )
    ap.add_argument("--out", type=Path, help="results JSON (default: bench/results/concurrency-<model>.json)")
    ap.add_argument("--force", action="store_true", help="overwrite existing results")
    ap.add_argument("--plot", nargs=2, type=Path, metavar=("JSON", "PNG"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.plot:
        plot(*args.plot)
        return 0
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
    if "base-pN" in names and not (args.base_tree and (args.base_tree / "server").is_dir()):
        print("base-pN needs --base-tree pointing at a checkout of this project", file=sys.stderr)
        return 2
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        print(f"unknown servers {unknown}; choose from {list(TARGETS)}", file=sys.stderr)
        return 2
    if any(n.startswith("ours") for n in names) and not ours_is_batched():
        print("skipping ours-*: server/engine/engine.py does not drive the batching decoder yet", flush=True)
        names = [n for n in names if not n.startswith("ours")]
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()  # other work on the machine skews every column: record it
    rows, raw = bench_all(names, args)
    print_table(rows, args.clients)
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
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k
            in (
                "parallel",
                "requests",
                "rounds",
                "max_tokens",
                "ctx",
                "threads",
                "clients",
                "n_gpu_layers",
                "flash_attn",
                "fresh_questions",
                "base_tree",
            )
        },
        "rows": rows,
        "ratios_at_4_clients": ratios(rows, 4),
        "ratios_by_clients": {c: ratios(rows, c) for c in args.clients},
        "rounds": raw,
    }
    for c, r in doc["ratios_by_clients"].items():
        print(f"ratios at {c} clients:", r)
    write_atomic(out, json.dumps(doc, indent=1, default=str).encode())
    if args.no_plot:
        print(f"wrote {out}")
        return 0
    png = out.with_suffix(".png")
    subprocess.run([str(prepare_lcp_venv()), __file__, "--plot", str(out), str(png)], check=True)
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
