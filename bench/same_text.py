"""Do our greedy answers equal llama-server's? The same messages through /v1/chat/completions (or /v1/completions).

Three servers on one model file, one slot each, started one after another (nothing runs beside them):
  ours                    this server, default settings (BATCH_INVARIANT on), SPECULATIVE=off
  ours-invariance-off     the same with BATCH_INVARIANT=off: llama.cpp's own kernel choices
  llama-server            llama.cpp's server, built from the llama.cpp the pinned llama-cpp-python vendors
Every prompt (bench/_edit_prompts.py and bench/_invariance_prompts.py) is sent with the same system
prompt at temperature 0, no repeat penalty, to each. Recorded per prompt and server: the prompt tokens
(equal counts say the chat template rendered the same prompt), the completion tokens, and whether the
text equals llama-server's. Batch invariance keeps llama.cpp's repacked and tiled CPU kernels off, so
its logits round differently from llama-server's; where two tokens are nearly tied the text can differ.

    python bench/same_text.py                           # SmolLM2; writes bench/results/same-text-<model>.json
    python bench/same_text.py --model models/gemma-3-270m-q4_k_m.gguf --endpoint completions   # a base model
    python bench/same_text.py ... --no-shared-prefix   # no cached prefix reused: prompts computed whole
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _edit_prompts import PROMPTS as EDIT  # noqa: E402
from _invariance_prompts import PROMPTS as QUESTIONS  # noqa: E402
from _targets import PIN, ROOT, SYSTEM, TARGETS, WORK, stop_on_sigterm  # noqa: E402
from concurrency import free_port, post, wait_ready, write_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SERVERS = {  # name: (target, extra environment)
    "ours": ("ours-p1", {"LLAMA_SERVER_SPECULATIVE": "off"}),
    "ours-invariance-off": ("ours-p1", {"LLAMA_SERVER_SPECULATIVE": "off", "LLAMA_SERVER_BATCH_INVARIANT": "off"}),
    "llama-server": ("llama-server-p1", {}),
}
UNRELATED = "Numbers: 4 8 15 16 23 42."
PROMPTS = {**EDIT, **{f"question-{i}": q for i, q in enumerate(QUESTIONS)}}


def body(args, text: str) -> dict:
    """Greedy, no repeat penalty; chat messages with the system prompt, or the raw text as a completion."""
    common = {"max_tokens": args.max_tokens, "temperature": 0, "repeat_penalty": 1.0}
    if args.endpoint == "completions":
        return {"prompt": f"{SYSTEM}\n\n{text}\n", **common}
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}], **common}


def answers(name: str, args) -> dict[str, dict]:
    """Start one server, ask every prompt once, stop it."""
    target, extra = SERVERS[name]
    t = TARGETS[target]
    t.prepare()
    port = free_port()
    argv, env = t.command(args.model, port, args)
    with open(WORK / f"same-text-{name}.log", "w") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env={**os.environ, **env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base + t.ready, proc)
        out = {}
        for p, text in PROMPTS.items():
            if args.no_shared_prefix:  # a prompt sharing nothing, so no cached prefix is reused
                post(f"{base}/v1/completions", {"prompt": UNRELATED, "max_tokens": 1})
            r = post(f"{base}/v1/{args.endpoint}", body(args, text))
            choice = r["choices"][0]
            out[p] = {
                "prompt_tokens": r["usage"]["prompt_tokens"],
                "completion_tokens": r["usage"]["completion_tokens"],
                "finish_reason": choice["finish_reason"],
                "text": choice["message"]["content"] if "message" in choice else choice["text"],
            }
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def compare(runs: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per server: prompts whose prompt tokens and whose text equal llama-server's."""
    ref = runs["llama-server"]
    return {
        name: {
            "same_prompt_tokens": sum(run[p]["prompt_tokens"] == ref[p]["prompt_tokens"] for p in PROMPTS),
            "same_text": sum(run[p]["text"] == ref[p]["text"] for p in PROMPTS),
            "prompts": len(PROMPTS),
        }
        for name, run in runs.items()
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: SmolLM2-135M-Instruct, fetched once)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument(
        "--endpoint",
        choices=("chat/completions", "completions"),
        default="chat/completions",
        help="completions: the same raw text to both, for a model without a chat template (each server "
        "falls back on its own format: llama-server on ChatML)",
    )
    ap.add_argument(
        "--no-shared-prefix",
        action="store_true",
        help="ask an unrelated prompt before each, so that no server reuses the system prompt's cached cells",
    )
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    args.parallel, args.n_gpu_layers, args.flash_attn = 1, 0, "auto"  # what the targets' commands read
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from server.model.files import ensure_smollm2

        args.model = ensure_smollm2()
    args.model = args.model.resolve()
    WORK.mkdir(parents=True, exist_ok=True)
    runs = {name: answers(name, args) for name in SERVERS}
    summary = compare(runs)
    print(f"{'server':22} {'same prompt tokens':>20} {'same text as llama-server':>27}")
    for name, s in summary.items():
        print(f"{name:22} {s['same_prompt_tokens']:>14}/{s['prompts']:<5} {s['same_text']:>21}/{s['prompts']}")
    doc = {
        "model": args.model.name,
        "llama_cpp_python": PIN,
        "command": "bench/same_text.py " + " ".join(argv),
        "settings": {
            "endpoint": args.endpoint,
            "no_shared_prefix": args.no_shared_prefix,
            "max_tokens": args.max_tokens,
            "ctx": args.ctx,
            "threads": args.threads,
            "system": SYSTEM,
        },
        "summary": summary,
        "runs": runs,
    }
    suffix = ("-completions" if args.endpoint == "completions" else "") + (
        "-no-shared-prefix" if args.no_shared_prefix else ""
    )
    out = args.out or RESULTS / f"same-text-{args.model.stem}{suffix}.json"
    write_atomic(out, (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode())
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
