"""The servers the concurrency benchmark compares: how each is prepared, started and asked.

ours-pN / ours-p1 (this server under gunicorn), llama-server-pN / -p1 (llama.cpp's own server, built
from the llama.cpp source the pinned llama-cpp-python vendors), llama-cpp-python's server (in its own
venv) and decoder-pN (the batching decoder in-process, bench/_inprocess.py). Every side gets the same
system prompt, question, greedy sampling and no repeat penalty; `Target.eos` says how each is kept from
stopping at end of sequence (bench/concurrency.py asks for that on every side).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / ".work"
PIN = next(
    line.split("==")[1].strip()
    for line in (ROOT / "requirements.txt").read_text().splitlines()
    if line.startswith("llama-cpp-python==")
)
SRC = WORK / "src" / f"llama_cpp_python-{PIN}"
LLAMA_SERVER = WORK / f"llama-server-{PIN}" / "bin" / "llama-server"
LCP_VENV = WORK / f"llama-cpp-python-{PIN}-venv"


def stop_on_sigterm() -> None:
    """Make SIGTERM end a bench as Ctrl-C does, through its `finally` blocks, so the servers it
    started are stopped too (by default the bench would die at once and leave them running)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


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
    # No web UI download (offline machines) and no TLS: only the HTTP API is measured. The same
    # compiler flags as our llama.cpp build (the Makefile's LLAMA_CMAKE_ARGS: no AMX kernels).
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
            *LLAMA_CMAKE_ARGS,
        ]
    )
    sh(["cmake", "--build", build, "--target", "llama-server", "-j", str(os.cpu_count() or 2)])
    return LLAMA_SERVER


def _makefile_cmake_args() -> list[str]:
    """The Makefile's LLAMA_CMAKE_ARGS, so llama-server is compiled as our llama.cpp is."""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith("LLAMA_CMAKE_ARGS ?="):
            return line.split("?=", 1)[1].split()
    return []


LLAMA_CMAKE_ARGS = _makefile_cmake_args()


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
    eos: str = "field"  # how to ask it to ignore end of sequence: body field, logit bias, decoder params
    home: Callable[[argparse.Namespace], Path] = lambda a: ROOT  # the folder it runs in


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


def _ours(fixed_slots: int | None, worker_class: str | None = None, **settings: str):
    """Our server; `settings` are further LLAMA_SERVER_* variables (e.g. SPECULATIVE="off")."""

    def command(model, port, a):
        env = dict(
            **{f"LLAMA_SERVER_{k}": v for k, v in settings.items()},
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
            *(["--worker-class", worker_class] if worker_class else []),
            "server.http.app:create_app()",
        ], env

    return command


def _before(model, port, a):
    """Another checkout of this server (--before DIR, e.g. `git worktree add DIR <commit>` with its
    own .venv): `python -m server` starts gunicorn with that checkout's own app path."""
    _, env = _ours(None)(model, port, a)
    return [a.before / ".venv" / "bin" / "python", "-m", "server"], env


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
        # where a loss comes from: the defaults less speculation, less batch invariance
        Target(
            "ours-nospec-pN",
            lambda: None,
            _ours(None, SPECULATIVE="off"),
            "/api/respond",
            "/api/health",
            _ours_body,
            _usage,
        ),
        Target(
            "ours-loose-pN",
            lambda: None,
            _ours(None, BATCH_INVARIANT="off"),
            "/api/respond",
            "/api/health",
            _ours_body,
            _usage,
        ),
        # gunicorn's plain gthread worker instead of ours (server/http/worker.py), which reads each
        # request whole before a thread takes it
        Target(
            "ours-gthread-pN", lambda: None, _ours(None, "gthread"), "/api/respond", "/api/health", _ours_body, _usage
        ),
        Target(
            "before-pN",
            lambda: None,
            _before,
            "/api/respond",
            "/api/health",
            _ours_body,
            _usage,
            home=lambda a: a.before,
        ),
        Target("decoder-pN", lambda: None, None, "", "", _chat, _usage, eos="params"),  # in-process, see InProcess
        Target(
            "llama-cpp-python",
            prepare_lcp_venv,
            _lcp,
            "/v1/chat/completions",
            "/v1/models",
            _chat,
            _usage,
            eos="logit_bias",
        ),
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
