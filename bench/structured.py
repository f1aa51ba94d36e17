"""Structured-answer benchmark: what a JSON Schema costs, side by side in one run.

Four ratios, each measured in the same run on the same model, prompt and schema
(greedy, no repeat penalty, equal token counts):
  single    ours, json_schema request / the same request unconstrained   (goal >= 0.9)
  batch     ours, 4 clients of which 2 constrained / 4 unconstrained      (goal >= 0.9)
  vs-ref    ours json_schema / llama.cpp's llama-server json_schema       (goal >= 1.0)
  extract   ours, structured extraction with speculation / without        (goal >= 1.3)
"single", "vs-ref" and "extract" compare decode speed as each server reports it (tokens
after the first / the time they took); "batch" compares aggregate tokens/s seen by the
clients. "extract" asks both servers (ours, and ours with SPECULATIVE=off) to copy a
customer's details from a message into a JSON Schema answer, a message never seen before
in each round (bench/_extract_prompts.py), and checks that both answers are the same text.
An unconstrained request generates exactly as many tokens as the constrained answer
(ignore_eos). Both servers get the same raw prompt through their completion routes.
Every round runs every measurement, in a rotating order, so load from other work
falls on all columns alike; the table gives min / median / max over rounds.

Before anything else, on the fresh servers, the log-probabilities check: the same
prompt at temperature 0 on both, every token's and every alternative's log-probability
compared (llama-server's /completion with n_probs, ours /v1/completions with logprobs).

    python bench/structured.py                 # default model, 5 rounds
    python bench/structured.py --rounds 3 --threads 2

llama-server is built as bench/concurrency.py builds it (first run: ~10 min of compiling).
Results: bench/results/structured-<model>.json (refuses to overwrite without --force).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import _extract_prompts as extract
import concurrency as cc

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 6, "maxLength": 6},
                    "age": {"type": "integer", "minimum": 18, "maximum": 99},
                    "city": {"enum": ["Paris", "London", "Rome", "Berlin"]},
                },
                "required": ["name", "age", "city"],
                "additionalProperties": False,
            },
            "minItems": 6,
            "maxItems": 6,
        }
    },
    "required": ["people"],
    "additionalProperties": False,
}
PROMPT = "Here are six people, with their name, age and city, as JSON:\n"
LOGPROB_PROMPT = "The three primary colours are"
TOP = 5
GOALS = {"single": 0.9, "batch": 0.9, "vs-ref": 1.0, "extract": 1.3}


class Ours:
    def __init__(self, base: str) -> None:
        self.base = base

    def ask(self, constrained: bool, max_tokens: int, ignore_eos: bool = False) -> dict:
        body = {"prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "repeat_penalty": 1.0}
        if constrained:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "people", "schema": SCHEMA}}
        if ignore_eos:
            body["ignore_eos"] = True
        r = cc.post(self.base + "/v1/completions", body)
        return {
            "tokens": r["usage"]["completion_tokens"],
            "decode_tps": r["timings"]["tokens_per_second"],
            "text": r["choices"][0]["text"],
        }

    def extract(self, i: int) -> dict:
        """The i-th extraction message's details as JSON, through the chat route."""
        schema = {"name": "customer", "schema": extract.SCHEMA}
        body = {
            "messages": [{"role": "user", "content": extract.message(i)}],
            "max_tokens": 160,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "response_format": {"type": "json_schema", "json_schema": schema},
        }
        r = cc.post(self.base + "/v1/chat/completions", body)
        return {"decode_tps": r["timings"]["tokens_per_second"], "text": r["choices"][0]["message"]["content"]}

    def logprobs(self) -> list[dict]:
        body = {"prompt": LOGPROB_PROMPT, "max_tokens": 8, "temperature": 0, "repeat_penalty": 1.0, "logprobs": TOP}
        lp = cc.post(self.base + "/v1/completions", body)["choices"][0]["logprobs"]
        return [
            {"token": t, "logprob": p, "top": top}
            for t, p, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"])
        ]


class Reference:
    """llama.cpp's llama-server, through its native /completion route."""

    def __init__(self, base: str) -> None:
        self.base = base

    def ask(self, constrained: bool, max_tokens: int, ignore_eos: bool = False) -> dict:
        body = {"prompt": PROMPT, "n_predict": max_tokens, "temperature": 0, "repeat_penalty": 1.0}
        if constrained:
            body["json_schema"] = SCHEMA
        if ignore_eos:
            body["ignore_eos"] = True
        r = cc.post(self.base + "/completion", body)
        return {
            "tokens": r["tokens_predicted"],
            "decode_tps": r["timings"]["predicted_per_second"],
            "text": r["content"],
        }

    def logprobs(self) -> list[dict]:
        body = {
            "prompt": LOGPROB_PROMPT,
            "n_predict": 8,
            "temperature": 0,
            "repeat_penalty": 1.0,
            "n_probs": TOP,
            "post_sampling_probs": False,
        }
        probs = cc.post(self.base + "/completion", body)["completion_probabilities"]
        return [
            {"token": p["token"], "logprob": p["logprob"], "top": {t["token"]: t["logprob"] for t in p["top_logprobs"]}}
            for p in probs
        ]


def compare_logprobs(ours: list[dict], ref: list[dict]) -> dict:
    """Largest |difference| over the tokens both chose alike, and over their alternatives."""
    same = 0
    worst = 0.0
    for a, b in zip(ours, ref):
        if a["token"] != b["token"]:
            break
        same += 1
        worst = max(worst, abs(a["logprob"] - b["logprob"]))
        for token, lp in b["top"].items():
            if token in a["top"]:
                worst = max(worst, abs(a["top"][token] - lp))
    return {
        "tokens_compared": same,
        "tokens": [a["token"] for a in ours],
        "max_abs_difference": round(worst, 6),
        "within_0.01": same > 0 and worst < 0.01,
    }


def concurrent(jobs: list) -> tuple[float, int]:
    """Run the callables at once; (wall seconds, completion tokens of all)."""
    tokens = [0] * len(jobs)

    def run(i: int) -> None:
        tokens[i] = jobs[i]()["tokens"]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return time.perf_counter() - t0, sum(tokens)


def one_round(ours: Ours, ref: Reference | None, nospec: Ours | None, n: int, r: int) -> dict:
    """Every measurement once, in an order that rotates with the round."""
    steps = {
        "ours_json": lambda: ours.ask(True, 2 * n)["decode_tps"],
        "ours_free": lambda: ours.ask(False, n, ignore_eos=True)["decode_tps"],
    }
    if ref is not None:
        steps["ref_json"] = lambda: ref.ask(True, 2 * n)["decode_tps"]
        steps["ref_free"] = lambda: ref.ask(False, n, ignore_eos=True)["decode_tps"]
    steps |= {
        "ours_4_free": lambda: _aggregate([lambda: ours.ask(False, n, True)] * 4),
        "ours_2_json_2_free": lambda: _aggregate(
            [lambda: ours.ask(True, 2 * n)] * 2 + [lambda: ours.ask(False, n, True)] * 2
        ),
    }
    texts: dict[str, str] = {}
    if nospec is not None:
        for name, server in (("ours_extract", ours), ("nospec_extract", nospec)):
            steps[name] = lambda server=server, name=name: _extracted(server, r, texts, name)
    names = list(steps)
    k = r % len(names)
    row = {}
    for name in names[k:] + names[:k]:
        row[name] = round(steps[name](), 2)
        print(f"round {r}  {name:20} {row[name]:8.2f} tokens/s", flush=True)
    if texts:
        row["extract_same_text"] = len(set(texts.values())) == 1
    return row


def _extracted(server: Ours, r: int, texts: dict[str, str], name: str) -> float:
    answer = server.extract(r)
    texts[name] = answer["text"]
    return float(answer["decode_tps"])


def _aggregate(jobs: list) -> float:
    wall, tokens = concurrent(jobs)
    return tokens / wall


def summary(rows: list[dict]) -> dict:
    keys = [k for k, v in rows[0].items() if not isinstance(v, bool)]
    spread = {
        k: {
            "min": min(r[k] for r in rows),
            "median": statistics.median(r[k] for r in rows),
            "max": max(r[k] for r in rows),
        }
        for k in keys
    }
    per_round = {
        "single": [r["ours_json"] / r["ours_free"] for r in rows],
        "batch": [r["ours_2_json_2_free"] / r["ours_4_free"] for r in rows],
    }
    if "ref_json" in rows[0]:
        per_round["vs-ref"] = [r["ours_json"] / r["ref_json"] for r in rows]
    if "ours_extract" in rows[0]:
        per_round["extract"] = [r["ours_extract"] / r["nospec_extract"] for r in rows]
    ratios = {
        k: {
            "min": round(min(v), 3),
            "median": round(statistics.median(v), 3),
            "max": round(max(v), 3),
            "goal": GOALS[k],
        }
        for k, v in per_round.items()
    }
    return {"tokens_per_s": spread, "ratios": ratios}


def print_table(doc: dict) -> None:
    print("\ntokens/s over rounds: min / median / max")
    for k, v in doc["summary"]["tokens_per_s"].items():
        print(f"  {k:20} {v['min']:8.1f} {v['median']:8.1f} {v['max']:8.1f}")
    print("\nratio                min    median   max    goal")
    for k, v in doc["summary"]["ratios"].items():
        mark = "ok" if v["median"] >= v["goal"] else "MISSED"
        print(f"  {k:16} {v['min']:7.3f} {v['median']:7.3f} {v['max']:7.3f}  >= {v['goal']}  {mark}")
    if doc["profile"]:
        p = doc["profile"]
        print(
            f"\nin-process, one sequence: {p['decode_tokens_per_s']} tokens/s; constrained sampling "
            f"{p['constrained_sampling_ms_per_token']} ms/token, first choice refused "
            f"{p['first_choice_refused_share']:.0%}, masked draws by subset {p['masked_draws_by_subset']}"
        )
    lp = doc["logprobs"]
    if lp:
        print(f"\nlogprobs vs llama-server: {lp['tokens_compared']} tokens, max |diff| {lp['max_abs_difference']}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, help="GGUF file (default: the server's default model)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=1024, help="context per slot")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument(
        "--no-reference", action="store_true", help="ours only: no llama-server, so no vs-ref ratio or logprobs check"
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the in-process profile of a constrained token")
    ap.add_argument("--no-extract", action="store_true", help="skip extraction with and without speculation")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--force", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    cc.stop_on_sigterm()
    if args.model is None:
        sys.path.insert(0, str(cc.ROOT))
        from server.model.files import resolve_model

        args.model = resolve_model(None).path
    args.model = args.model.resolve()
    out = args.out or cc.RESULTS / f"structured-{args.model.stem}.json"
    if out.exists() and not args.force:
        print(f"{out} exists; rerun with --force to replace it (or --out elsewhere)", file=sys.stderr)
        return 1
    cc.WORK.mkdir(parents=True, exist_ok=True)
    settings = argparse.Namespace(
        parallel=args.parallel, threads=args.threads, ctx=args.ctx, n_gpu_layers=0, flash_attn="auto"
    )
    load_before = os.getloadavg()
    served: list[Server] = []
    try:
        for name in ("ours-pN",) if args.no_reference else ("ours-pN", "llama-server-pN"):
            served.append(Server(name, args.model, settings))
        ours = Ours(served[0].base)
        ref = None if args.no_reference else Reference(served[1].base)
        nospec = None
        if not args.no_extract:
            served.append(Server("ours-pN", args.model, settings, {"LLAMA_SERVER_SPECULATIVE": "off"}, "ours-nospec"))
            nospec = Ours(served[-1].base)
        # On fresh servers, before any other request.
        logprobs = compare_logprobs(ours.logprobs(), ref.logprobs()) if ref else None
        first = ours.ask(True, 400)
        n = first["tokens"]
        json.loads(first["text"])  # the answer parses
        print(f"the constrained answer is {n} tokens; unconstrained requests generate as many", flush=True)
        rows = [one_round(ours, ref, nospec, n, r) for r in range(args.rounds)]
    finally:
        for s in served:
            s.close()
    where = None if args.no_profile else profile(args.model, args.threads, n)
    doc = {
        "model": args.model.name,
        "command": "python bench/structured.py " + " ".join(argv),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        },
        "commit": _commit(),
        "settings": {"parallel": args.parallel, "threads": args.threads, "ctx": args.ctx, "rounds": args.rounds},
        "schema": SCHEMA,
        "prompt": PROMPT,
        "answer_tokens": n,
        "logprobs": logprobs,
        "rounds": rows,
        "summary": summary(rows),
        "profile": where,
    }
    print_table(doc)
    cc.RESULTS.mkdir(parents=True, exist_ok=True)
    cc.write_atomic(out, (json.dumps(doc, indent=1) + "\n").encode())
    print(f"wrote {out}")
    return 0


def profile(model: Path, threads: int, n: int, rounds: int = 3) -> dict:
    """Where a constrained token's time goes, in-process (one sequence, no HTTP): the time spent
    sampling under the grammar, how often the model's first choice was refused, and which
    subset the masked draw needed; against the same number of unconstrained tokens."""
    sys.path.insert(0, str(cc.ROOT))
    from server.engine.batching import BatchDecoder, Ended, SamplingParams
    from server.engine.constraints import sampler as constrained
    from server.model.schema_grammar import schema_to_gbnf

    counts = {"sample_s": 0.0, "tokens": 0, "refused": 0, "masked": {}}
    real_sample, real_draw = constrained.ConstrainedSampler.sample, constrained.ConstrainedSampler._draw
    real_masked = constrained.ConstrainedSampler._masked

    def sample(self, logits, recent):
        t0 = time.perf_counter()
        try:
            return real_sample(self, logits, recent)
        finally:
            counts["sample_s"] += time.perf_counter() - t0
            counts["tokens"] += 1

    def masked(self, logits):
        counts["refused"] += 1
        return real_masked(self, logits)

    def draw(self, cand):
        size = "all" if cand.array.size >= self.n_vocab else str(cand.array.size)
        counts["masked"][size] = counts["masked"].get(size, 0) + 1
        return real_draw(self, cand)

    constrained.ConstrainedSampler.sample = sample
    constrained.ConstrainedSampler._masked = masked
    constrained.ConstrainedSampler._draw = draw
    decoder = BatchDecoder.load(model, n_parallel=1, n_ctx_per_seq=1024, n_threads=threads)
    grammar, prompt = schema_to_gbnf(SCHEMA), decoder.tokenize(PROMPT)
    walls: dict[str, list[float]] = {"json": [], "free": []}
    try:
        for _ in range(rounds):
            for kind in ("json", "free"):
                if kind == "json":  # up to its own end; the free one exactly as long
                    params = SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=n + 40, grammar=grammar)
                else:
                    params = SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=n, ignore_eos=True)
                ended: list = []
                decoder.add(prompt, params, ended.append)
                decoder.run_until_idle()
                walls[kind].append(next(e for e in ended if isinstance(e, Ended)).timings.tokens_per_second)
                decoder.clear_cache()
    finally:
        decoder.close()
        constrained.ConstrainedSampler.sample, constrained.ConstrainedSampler._masked = real_sample, real_masked
        constrained.ConstrainedSampler._draw = real_draw
    per_token_ms = 1000 * counts["sample_s"] / max(counts["tokens"], 1)
    return {
        "decode_tokens_per_s": {k: statistics.median(v) for k, v in walls.items()},
        "constrained_sampling_ms_per_token": round(per_token_ms, 3),
        "first_choice_refused_share": round(counts["refused"] / max(counts["tokens"], 1), 3),
        "masked_draws_by_subset": counts["masked"],
        "constrained_tokens": counts["tokens"],
    }


def _commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cc.ROOT, capture_output=True, text=True)
    return done.stdout.strip()


class Server:
    """One server started as bench/concurrency.py starts it, up for the whole run."""

    def __init__(
        self, name: str, model: Path, settings: argparse.Namespace, env: dict | None = None, label: str = ""
    ) -> None:
        target = cc.TARGETS[name]
        target.prepare()
        port = cc.free_port()
        argv, own_env = target.command(model, port, settings)
        env = {**own_env, **(env or {})}
        self.log = open(cc.WORK / f"structured-{label or name}.log", "w")
        self.proc = subprocess.Popen(
            [str(a) for a in argv],
            cwd=cc.ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base = f"http://127.0.0.1:{port}"
        cc.wait_ready(self.base + target.ready, self.proc)

    def close(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
