"""Speculative decoding bench: n-gram drafts on edit-style prompts, ours and llama-server, with and without.

Side by side in one run, on the same model file (default SmolLM2-135M-Instruct), threads and slots:
  ours-off            this server (gunicorn + engine), SPECULATIVE=off
  ours-ngram          the same with SPECULATIVE=ngram (prompt-lookup drafts, DRAFT_MAX 16)
  llama-server-off    llama.cpp's own server, built from the llama.cpp the pinned llama-cpp-python vendors
  llama-server-ngram  the same with --spec-type ngram-mod
and, with a draft model (same vocabulary), both servers drafting with it, DRAFT_MAX tokens, its layers where
the served model's are (--n-gpu-layers):
  ours-draft-self / llama-server-draft-self   the served model drafts for itself: the upper bound of acceptance
  ours-draft / llama-server-draft             --draft-model (e.g. a much smaller model: the cost of drafting
                                              when few drafts are accepted)
  (llama-server: --spec-type draft-simple --model-draft F --spec-draft-n-max N --spec-draft-ngl L; its other
  draft settings, e.g. p_min, stay at their defaults)
The prompts (bench/_edit_prompts.py, --prompts edit) ask for a rewrite with typos fixed, typo fixes,
reformatted code and a continued list: answers that copy long runs of the prompt; --prompts free asks for a
poem, an explanation, a story and advice, answers that copy nothing, where drafting can only cost.
With 1 client the four prompts go one after another; with 4 clients each client sends one of them.
Greedy (or sampled at --temperature with one seed and the same top-k, top-p and min-p on both servers),
no repeat penalty, the same system prompt.

Answers end naturally (an edit has a natural end, which matters more here than equal lengths), capped by
--max-tokens. Where the two sides' answers end at different lengths, tokens/s of the generated tokens is
what is compared; the results say how many tokens each side generated. Rounds interleave the
servers (order rotating), so load from anything else on the machine falls on all of them alike; each
ratio is taken per round and reported as min / median / max with a 95% interval of its median
(bench/_spread.py). Our sides also report, per kind of guess (a match in the request's own text by its
length, the pools shared by all requests, a grammar's forced text), how often one was at hand, how often
the cost check refused it or probed it, and the tokens drafted and kept (the server's
llama_server_draft_kind_* counters, read before and after each pass). Also counted: per prompt,
whether our text with ngram drafts is byte-identical to our text without (temperature 0), and the
same for llama-server.

--fresh starts a new server for every timed pass (one side, one round, one client count) and stops it right
after, so no server sees a timed prompt twice: it measures what a user gets on prompts never seen before.
Without it each side's server stays up for the whole run and from its second pass on its n-gram draft pool
and prompt cache know the prompts (and the answers it gave): those numbers are what a shared pool gives to
repeated prompts, and are to be labelled so.

    python bench/speculative.py                     # writes bench/results/speculative-<model>.json
    python bench/speculative.py --rounds 5 --clients 1 --threads 2
    python bench/speculative.py --fresh --rounds 5      # every timed pass on a server of its own
    python bench/speculative.py --fresh --temperature 0.8   # sampled, one seed: same text with or without drafts
    python bench/speculative.py --fresh --prompts free      # answers that copy nothing: drafting must not cost
    python bench/speculative.py --model M.gguf --draft-model SMALL.gguf --n-gpu-layers -1 \
        --sides ours-off,ours-draft-self,ours-draft,llama-server-off,llama-server-draft-self,llama-server-draft
    OMP_WAIT_POLICY=PASSIVE python bench/speculative.py ...   # on a machine busy with other work
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speculative_report as report  # noqa: E402
from _edit_prompts import SETS  # noqa: E402
from _targets import PIN, ROOT, TARGETS, WORK, stop_on_sigterm  # noqa: E402
from concurrency import free_port, post, wait_ready, write_atomic  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIDES = (
    "ours-off",
    "ours-ngram",
    "ours-draft-self",
    "ours-draft",
    "llama-server-off",
    "llama-server-ngram",
    "llama-server-draft-self",
    "llama-server-draft",
)


def draft_file(name: str, args) -> Path | None:
    """The draft model a side drafts with: the served model itself (-draft-self) or --draft-model."""
    if name.endswith("-draft-self"):
        return args.model
    return args.draft_model if name.endswith("-draft") else None


def spec_env(name: str, args) -> dict[str, str]:
    """Our server's speculative settings for a side (ours-*)."""
    if not name.startswith("ours"):
        return {}
    mode = name.removeprefix("ours-").removesuffix("-self")
    env = {"LLAMA_SERVER_SPECULATIVE": mode}
    if mode != "off":
        env["LLAMA_SERVER_DRAFT_MAX"] = str(args.draft_max)
    if mode == "draft":
        env["LLAMA_SERVER_DRAFT_MODEL"] = str(draft_file(name, args))
        env["LLAMA_SERVER_DRAFT_N_GPU_LAYERS"] = str(args.n_gpu_layers)
    return env


def spec_argv(name: str, args) -> list:
    """llama-server's flags for a side (llama-server-*). This llama.cpp removed --draft-max: each
    speculative type has its own cap on drafted tokens."""
    if name == "llama-server-ngram":
        return ["--spec-type", "ngram-mod", "--spec-ngram-mod-n-max", args.draft_max]
    draft = draft_file(name, args) if name.startswith("llama-server") else None
    if draft is None:
        return []
    ngl = "all" if args.n_gpu_layers < 0 else args.n_gpu_layers  # its -1 would mean "auto"
    return [
        "--spec-type",
        "draft-simple",
        "--model-draft",
        draft,
        "--spec-draft-n-max",
        args.draft_max,
        "--spec-draft-ngl",
        ngl,
    ]


KIND_METRIC = re.compile(r"^llama_server_draft_kind_(\w+?)_total\{([^}]*)\} (\S+)$", re.M)


def parse_kinds(text: str) -> dict[str, dict[str, int]]:
    """{kind: {offered, refused, probes, drafts, tokens, accepted}} from a Prometheus page."""
    out: dict[str, dict[str, int]] = {}
    for field, labels, value in KIND_METRIC.findall(text):
        kind = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("kind", "?")
        out.setdefault(kind, {})[field] = int(float(value))
    return out


def kinds_delta(after: dict, before: dict) -> dict[str, dict[str, int]]:
    """What a pass added to each kind's counters (a kept server's counters run on between passes)."""
    return {
        kind: {f: v - before.get(kind, {}).get(f, 0) for f, v in fields.items()}
        for kind, fields in after.items()
        if any(v - before.get(kind, {}).get(f, 0) for f, v in fields.items())
    }


def sampling(args) -> dict:
    """What every request adds to its target's greedy body: nothing at temperature 0; else the
    temperature, a seed and the same top-k, top-p and min-p on both servers (their defaults differ)."""
    if not args.temperature:
        return {}
    return {"temperature": args.temperature, "seed": args.seed, "top_k": 40, "top_p": 0.95, "min_p": 0.05}


class Side:
    """One server under test: kept up for the whole run, or with --fresh for one timed pass."""

    def __init__(self, name: str, args) -> None:
        import subprocess

        self.name = name
        self.t = TARGETS["ours-pN" if name.startswith("ours") else "llama-server-pN"]
        self.t.prepare()
        port = free_port()
        argv, env = self.t.command(args.model, port, args)
        argv, env = [*argv, *spec_argv(name, args)], {**env, **spec_env(name, args)}
        # Overwritten on each start (--fresh): what is kept is the last server's, the one that failed if one did.
        self.log = open(WORK / f"spec-{name}.log", "w")
        self.proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(self.base + self.t.ready, self.proc)
            self.ask(self.t.body("Say hello.", 8))  # warm-up, not measured
        except BaseException:
            self.close()
            raise

    def ask(self, body: dict) -> dict:
        return post(self.base + self.t.url, body)

    def kinds(self) -> dict[str, dict[str, int]]:
        """Our server's speculation counters per kind of guess ({} for llama-server)."""
        if not self.name.startswith("ours"):
            return {}
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            return parse_kinds(r.read().decode())

    def one(self, prompt: str, max_tokens: int, sampling: dict) -> dict:
        """One request: its text, completion tokens and draft counters (each server's own names)."""
        r = self.ask({**self.t.body(prompt, max_tokens), **sampling})
        timings = r.get("timings") or {}
        if "response" in r:  # ours
            text, drafted, accepted = r["response"], timings.get("draft_tokens", 0), timings.get("draft_accepted", 0)
        else:
            text = r["choices"][0]["message"]["content"]
            drafted, accepted = timings.get("draft_n", 0), timings.get("draft_n_accepted", 0)
        return {"text": text, "tokens": self.t.tokens(r), "drafted": drafted or 0, "accepted": accepted or 0}

    def round(self, prompts: dict[str, str], clients: int, max_tokens: int, sampling: dict | None = None) -> dict:
        """1 client: every prompt in turn; N clients: the prompts shared out, each client its own."""
        names = list(prompts)
        plan = [names] if clients == 1 else [names[c::clients] for c in range(clients)]
        answers: dict[str, dict] = {}
        errors: list[str] = []

        def client(mine: list[str]) -> None:
            for p in mine:
                try:
                    answers[p] = self.one(prompts[p], max_tokens, sampling or {})
                except Exception as exc:  # noqa: BLE001 - counted in the results
                    errors.append(f"{p}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=client, args=(m,)) for m in plan]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t0
        tokens = sum(a["tokens"] for a in answers.values())
        return {
            "server": self.name,
            "clients": clients,
            "completion_tokens": tokens,
            "wall_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2),
            "errors": len(errors),
            "error_text": errors[:4],
            "drafted": sum(a["drafted"] for a in answers.values()),
            "accepted": sum(a["accepted"] for a in answers.values()),
            "per_prompt": {p: {k: a[k] for k in ("tokens", "drafted", "accepted")} for p, a in answers.items()},
            "texts": {p: a["text"] for p, a in answers.items()},
        }

    def close(self) -> None:
        import signal
        import subprocess

        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def start(name: str, args, failed: dict[str, str]) -> Side | None:
    """A side's server, or None with the reason put in `failed` (name: why)."""
    t0 = time.monotonic()
    try:
        side = Side(name, args)
    except Exception as exc:  # noqa: BLE001 - reported in the results
        failed[name] = f"{type(exc).__name__}: {exc} (see spec-{name}.log)"
        print(f"{name} did not start: {failed[name]}", flush=True)
        return None
    print(f"{name} server up in {time.monotonic() - t0:.1f}s (pid {side.proc.pid})", flush=True)
    return side


def timed_pass(name: str, r: int, clients: int, args, kept: dict[str, Side], failed: dict[str, str]) -> dict | None:
    """One side's pass of one round at one client count: on its kept server, or (--fresh) on a server
    started for it and stopped right after, which has seen none of the prompts."""
    side = kept.get(name) or start(name, args, failed)
    if side is None:
        return None
    try:
        before = side.kinds()
        row = {"round": r, **side.round(SETS[args.prompts], clients, args.max_tokens, sampling(args))}
        row["per_kind"] = kinds_delta(side.kinds(), before)
    finally:
        if name not in kept:
            side.close()
    print(
        f"round {r}  {row['server']:24} {clients} clients  {row['tokens_per_s']:8.2f} t/s  "
        f"{row['completion_tokens']:5} tokens  drafted {row['drafted']:5} accepted "
        f"{row['accepted']:5}  errors {row['errors']}",
        flush=True,
    )
    return row


def bench(args, failed: dict[str, str]) -> list[dict]:
    """The rounds' rows; a side that does not start is put in `failed` (name: why) and the others run."""
    kept: dict[str, Side] = {}  # without --fresh: each side's one server, up for the whole run
    raw: list[dict] = []
    try:
        for name in [] if args.fresh else args.sides:
            if (side := start(name, args, failed)) is not None:
                kept[name] = side
        t0 = time.monotonic()
        for r in range(args.rounds):
            if r and time.monotonic() - t0 > args.budget_s:
                print(f"budget of {args.budget_s}s spent: stopping after {r} rounds", flush=True)
                break
            for clients in args.clients:
                names = [n for n in args.sides if n not in failed]  # --fresh: a side may fail in any round
                k = r % max(len(names), 1)
                for name in names[k:] + names[:k]:
                    row = timed_pass(name, r, clients, args, kept, failed)
                    raw += [row] if row else []
    finally:
        for side in kept.values():
            side.close()
    return raw


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: SmolLM2-135M-Instruct, fetched once)")
    ap.add_argument("--draft-model", type=Path, help="GGUF draft model of the -draft sides (same vocabulary)")
    ap.add_argument("--sides", default=",".join(SIDES), type=lambda t: [s for s in t.split(",") if s])
    ap.add_argument("--clients", default="1,4", type=lambda t: [int(c) for c in t.split(",")])
    ap.add_argument("--parallel", type=int, default=4, help="slots on every server")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument(
        "--fresh", action="store_true", help="a new server for every timed pass: no server sees a prompt twice"
    )
    ap.add_argument("--budget-s", type=float, default=720, help="start no new round after this many seconds")
    ap.add_argument(
        "--prompts", choices=sorted(SETS), default="edit", help="edit: answers that copy; free: answers that do not"
    )
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument(
        "--temperature", type=float, default=0.0, help="sampled requests (top-k 40, top-p 0.95, min-p 0.05)"
    )
    ap.add_argument("--seed", type=int, default=7, help="the seed of every sampled request")
    ap.add_argument("--draft-max", type=int, default=16, help="most drafted tokens per step, both servers")
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--note", default="", help="a sentence on the conditions (e.g. a shared machine), kept")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--force", action="store_true", help="overwrite existing results")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    unknown = [s for s in args.sides if s not in SIDES]
    if unknown:
        print(f"unknown sides {unknown}; choose from {SIDES}", file=sys.stderr)
        return 2
    if args.model is None:
        sys.path.insert(0, str(ROOT))
        from server.model.files import ensure_smollm2

        args.model = ensure_smollm2()
    args.model = args.model.resolve()
    if any(s.endswith("-draft") for s in args.sides):
        if args.draft_model is None or not args.draft_model.is_file():
            print("the -draft sides need --draft-model naming a GGUF file", file=sys.stderr)
            return 2
        args.draft_model = args.draft_model.resolve()
    out = args.out or RESULTS / f"speculative-{args.model.stem}.json"
    if out.exists() and not args.force:
        print(f"{out} exists; rerun with --force to replace it (or --out elsewhere)", file=sys.stderr)
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()  # other work on the machine skews every column: record it
    failed: dict[str, str] = {}
    raw = bench(args, failed)
    summary = report.summarize(raw, [s for s in args.sides if s not in failed], args.clients, args.prompts)
    report.print_summary(summary, args.clients)
    settings = {k: v for k, v in vars(args).items() if k not in ("model", "draft_model", "out", "force", "note")}
    doc = {
        "model": args.model.name,
        "draft_model": args.draft_model.name if args.draft_model else None,
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            # OpenMP threads that spin while waiting starve each other on a busy machine; every side inherits it.
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "note": args.note,
        "sides_failed": failed,
        "llama_cpp_python": PIN,
        "command": "bench/speculative.py " + " ".join(argv),
        "settings": {**settings, "rounds_run": max((r["round"] + 1 for r in raw), default=0)},
        "method": "rounds interleave the sides (order rotating); answers end naturally (capped by max_tokens), "
        "so tokens/s counts the generated tokens of each side; each ratio is taken per round from that "
        "round's back-to-back runs; a claim stands where the 95% order-statistic interval of the median "
        "ratio excludes 1; "
        + (
            "each pass on a new server (fresh): no server saw a timed prompt before"
            if args.fresh
            else "each side's server kept up for the run: later passes repeat prompts its draft pool has seen"
        ),
        **summary,
        "rounds": raw,
    }
    write_atomic(out, json.dumps(doc, indent=1).encode())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
