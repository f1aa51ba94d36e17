"""Benchmark the server against the same model driven in-process by llama-cpp-python.

One run: start the real server (gunicorn, server/gunicorn.conf.py) and load the
same GGUF in this process with the same settings; then, for each repetition,
ask both the same question (a different one per repetition, so neither side
reuses a cached prompt), alternating which goes first. Measured on both sides
the same way: time to first token (request sent -> first text) and decode speed
((tokens - 1) / (first text -> end)). Equal work: both sides are greedy on the same
prompt, so they normally generate the same tokens; a repetition in which the two
token counts differ is left out of the comparison (and counted). Prints min / median
/ max per side and of the per-repetition ratio and overhead, and writes
bench/results/serve[-<model>].json. Targets: server decode >= 97% of in-process,
time-to-first-token overhead < 10 ms.

    python bench/serve.py                       # Gemma 3 270M (the embedded default)
    python bench/serve.py --model models/llama-2-7b-chat.Q4_K_M.gguf --n-gpu-layers -1 --tokens 128
    python bench/serve.py --model m.gguf --n-gpu-layers auto --vram-budget-mb 4096

With `auto`, the in-process side loads as many layers as the server's plan chose (read
from /api/health), so both sides run the same split; the plan is recorded in the results.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.model.files import resolve_model  # noqa: E402
from server.model.prompt import Vocab, build_messages, choose_format  # noqa: E402
from server.settings import Settings, physical_cores  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import _spread  # noqa: E402

DECODE_RATIO_TARGET = 0.97
TTFT_OVERHEAD_TARGET_MS = 10.0
SAMPLING = {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1, "seed": 1}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="GGUF file (default: what the server would pick)")
    p.add_argument("--tokens", type=int, default=64, help="tokens to generate per request")
    p.add_argument("--reps", type=int, default=7, help="measured repetitions per side")
    p.add_argument("--n-gpu-layers", default="0", help="0, N, -1 (all) or auto, for both sides")
    p.add_argument(
        "--flash-attn",
        choices=("auto", "on", "off"),
        default="auto",
        help="both sides; in-process takes a bool, so auto means on (what llama.cpp's auto picks)",
    )
    p.add_argument(
        "--repeat-penalty",
        type=float,
        default=SAMPLING["repeat_penalty"],
        help="1.0: plain greedy (no penalty work between tokens on either side)",
    )
    p.add_argument("--vram-budget-mb", type=int, help="LLAMA_SERVER_VRAM_BUDGET_MB for the server's auto plan")
    p.add_argument("--n-ctx", type=int, default=1024)
    p.add_argument("--threads", type=int, default=physical_cores())
    p.add_argument("--results", type=Path, help="results JSON (default: bench/results/serve-<model>.json)")
    return p.parse_args()


def question(i: int) -> str:
    return f"Request {i}: write a long, detailed story about a lighthouse keeper and the sea."


def start_server(model: Path, a) -> tuple[subprocess.Popen, str, dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "LLAMA_SERVER_MODEL": str(model),
        "LLAMA_SERVER_PORT": str(port),
        "LLAMA_SERVER_N_CTX": str(a.n_ctx),
        "LLAMA_SERVER_N_GPU_LAYERS": str(a.n_gpu_layers),
        "LLAMA_SERVER_N_THREADS": str(a.threads),
        "LLAMA_SERVER_MAX_TOKENS_CEILING": str(max(a.tokens, 2048)),
        "LLAMA_SERVER_FLASH_ATTN": a.flash_attn,
    }
    if a.vram_budget_mb:
        env["LLAMA_SERVER_VRAM_BUDGET_MB"] = str(a.vram_budget_mb)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            health = requests.get(f"{base}/api/health", timeout=2)
            if health.status_code == 200:
                return proc, base, health.json()
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become healthy in 5 minutes")


def via_http(base: str, text: str, tokens: int, repeat_penalty: float = SAMPLING["repeat_penalty"]) -> dict:
    body = {"query": text, "max_tokens": tokens, "stream": True, **SAMPLING, "repeat_penalty": repeat_penalty}
    t0 = time.perf_counter()
    first = None
    with requests.post(f"{base}/api/respond", json=body, stream=True, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "delta" and first is None:
                first = time.perf_counter()
            elif event["type"] == "done":
                end = time.perf_counter()
                n = event["usage"]["completion_tokens"]
    return {"ttft_ms": (first - t0) * 1000, "decode_tps": (n - 1) / (end - first), "tokens": n}


def _counting_llama():
    """llama-cpp-python's Llama, counting the tokens it samples (the end token included)."""
    from llama_cpp import Llama

    class CountingLlama(Llama):
        samples = 0

        def sample(self, *args, **kwargs):
            self.samples += 1
            return super().sample(*args, **kwargs)

    return CountingLlama


class InProcess:
    """The same GGUF, the same settings and the same prompt tokens, with no server."""

    def __init__(self, model: Path, a, n_gpu_layers: int):
        from server.model.describe import chat_template

        _Llama = _counting_llama()
        self.llama = _Llama(
            model_path=str(model),
            n_ctx=a.n_ctx,
            n_threads=a.threads,
            n_threads_batch=a.threads,
            n_batch=512,
            n_gpu_layers=n_gpu_layers,
            flash_attn=a.flash_attn != "off",
            verbose=False,
        )
        m = self.llama._model
        bos, eos = self.llama.token_bos(), self.llama.token_eos()
        self.vocab = Vocab(
            lambda t, sp: self.llama.tokenize(t.encode(), add_bos=False, special=sp),
            bos,
            eos,
            m.token_get_text(bos),
            m.token_get_text(eos),
            bool(m.add_bos_token()),
            m.token_get_attr,
            m.token_get_text,
        )
        self.repeat_penalty = a.repeat_penalty
        self.format = choose_format(chat_template(Settings(), self.llama.metadata)[0])

    def run(self, text: str, tokens: int) -> dict:
        prompt = self.format.tokens(build_messages(Settings().system_prompt, [], text), self.vocab)
        t0 = time.perf_counter()
        start_samples, first = self.llama.samples, None
        for chunk in self.llama.create_completion(
            prompt=prompt,
            max_tokens=tokens,
            stream=True,
            temperature=SAMPLING["temperature"],
            top_p=SAMPLING["top_p"],
            top_k=SAMPLING["top_k"],
            min_p=SAMPLING["min_p"],
            repeat_penalty=self.repeat_penalty,
            seed=SAMPLING["seed"],
        ):
            choice = chunk["choices"][0]
            if choice["text"] and first is None:
                first = time.perf_counter()
            finish = choice["finish_reason"]
        end = time.perf_counter()
        n = self.llama.samples - start_samples - (1 if finish == "stop" else 0)  # the end token is no text
        return {"ttft_ms": (first - t0) * 1000, "decode_tps": (n - 1) / (end - first), "tokens": n}


def summarize(runs: dict[str, list[dict]]) -> dict:
    """Per side: medians and min/median/max. Compared per repetition (both sides asked the same
    question back to back), and only where both generated the same number of tokens: equal work."""
    med = {
        side: {k: statistics.median(r[k] for r in rs) for k in ("ttft_ms", "decode_tps", "tokens")}
        for side, rs in runs.items()
    }
    spreads = {
        side: {k: _spread.spread((r[k] for r in rs), 2) for k in ("ttft_ms", "decode_tps")} for side, rs in runs.items()
    }
    pairs = [(s, p) for s, p in zip(runs["server"], runs["in_process"], strict=True) if s["tokens"] == p["tokens"]]
    ratios = [s["decode_tps"] / p["decode_tps"] for s, p in pairs]
    overheads = [s["ttft_ms"] - p["ttft_ms"] for s, p in pairs]
    ratio = statistics.median(ratios) if ratios else float("nan")
    overhead = statistics.median(overheads) if overheads else float("nan")
    return {
        "medians": med,
        "spread": spreads,
        "equal_length_reps": len(pairs),
        "reps": len(runs["server"]),
        "decode_ratio": ratio,
        "decode_ratio_spread": _spread.claim(ratios, "server", "in-process", unit="repetitions"),
        "ttft_overhead_ms": overhead,
        "ttft_overhead_ms_spread": _spread.spread(overheads, 2),
        "decode_ratio_ok": ratio >= DECODE_RATIO_TARGET,
        "ttft_overhead_ok": overhead < TTFT_OVERHEAD_TARGET_MS,
    }


def _cell(s: dict, digits: int = 1) -> str:
    return "-" if s.get("median") is None else f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def main() -> int:
    a = parse_args()
    model = resolve_model(a.model).path
    results = a.results or ROOT / "bench" / "results" / f"serve-{model.stem}.json"
    proc, base, health = start_server(model, a)
    offload = health.get("offload", {})
    try:
        # The server's own layer count: for `auto` that is its plan, not "all".
        local = InProcess(model, a, int(offload.get("n_gpu_layers", 0)))
        via_http(base, question(-1), a.tokens, a.repeat_penalty), local.run(question(-1), a.tokens)  # warm-up
        runs: dict[str, list[dict]] = {"server": [], "in_process": []}
        for i in range(a.reps):
            order = [
                ("server", lambda i=i: via_http(base, question(i), a.tokens, a.repeat_penalty)),
                ("in_process", lambda i=i: local.run(question(i), a.tokens)),
            ]
            for side, measure in order if i % 2 == 0 else reversed(order):
                runs[side].append(measure())
    finally:
        proc.terminate()
        proc.wait(60)
    summary = summarize(runs)
    print(f"{'':12}{'TTFT ms':>24}{'decode tok/s':>26}{'tokens':>8}   (median [min-max] of {a.reps})")
    for side, m in summary["medians"].items():
        sp = summary["spread"][side]
        print(f"{side:12}{_cell(sp['ttft_ms']):>24}{_cell(sp['decode_tps']):>26}{m['tokens']:8.0f}")
    print(
        f"equal work: {summary['equal_length_reps']} of {summary['reps']} repetitions generated the same number "
        "of tokens on both sides; only those are compared"
    )
    print(
        f"decode ratio server/in-process per repetition: {_cell(summary['decode_ratio_spread'], 3)} "
        f"(target >= {DECODE_RATIO_TARGET}: {'ok' if summary['decode_ratio_ok'] else 'MISSED'}); "
        f"{summary['decode_ratio_spread']['text']}"
    )
    print(
        f"server offload: {offload.get('mode')} {offload.get('n_gpu_layers')}/{offload.get('total_layers')} layers "
        f"on {offload.get('backend')}; in-process loaded the same count"
    )
    print(
        f"TTFT overhead per repetition: {_cell(summary['ttft_overhead_ms_spread'], 1)} ms "
        f"(target < {TTFT_OVERHEAD_TARGET_MS}: {'ok' if summary['ttft_overhead_ok'] else 'MISSED'})"
    )
    record = {
        "model": str(model.name),
        "tokens": a.tokens,
        "reps": a.reps,
        "n_ctx": a.n_ctx,
        "threads": a.threads,
        "n_gpu_layers": a.n_gpu_layers,
        "flash_attn": a.flash_attn,
        "repeat_penalty": a.repeat_penalty,
        "vram_budget_mb": a.vram_budget_mb,
        "server_offload": offload,
        "server_parallel": health.get("parallel"),
        "loadavg": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **summary,
        "runs": runs,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    partial = results.with_name(results.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, results)  # never a half-written results file
    print(f"results: {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
