"""What a decode step costs by its rows: the shape speculation's cost check has to know.

A drafted token is one more row in a step whose other rows are the decoding sequences' own tokens.
This times llama_decode of 1 to 16 rows (every row's logits asked for, as a verified draft asks) after
a 300-token context, on the model as the server loads it (server/engine/opening.py), with the
batch-invariant switch on (the default) and off. Rounds interleave the row counts and the modes;
the median of each is reported with its spread. In-process, no HTTP: the engine's step, not a request.

    python bench/step_rows.py                           # SmolLM2 and Gemma 3, 2 threads
    python bench/step_rows.py --model M.gguf --threads 4 --rounds 7

Writes bench/results/step-rows-<model>.json per model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from concurrency import write_atomic  # noqa: E402

ROWS = (1, 2, 3, 4, 6, 8, 12, 16)
CONTEXT = 300  # tokens before the timed rows: about an edit prompt


def time_rows(path: Path, invariant: bool, threads: int, rounds: int, reps: int) -> dict[int, list[float]]:
    """Per row count, one median (ms) of `reps` timed steps per round."""
    import llama_cpp.llama_cpp as lc
    from llama_cpp import _internals

    from server.engine import invariance
    from server.engine.decoder_types import DecoderConfig
    from server.engine.opening import open_model

    cfg = DecoderConfig(
        n_parallel=1, n_ctx_per_seq=1024, n_threads=threads, speculative="off", prefix_cache=False,
        cache_ram_mib=0, batch_invariant=invariant,
    )  # fmt: skip
    model, ctx, cfg, _ = open_model(path, cfg)
    on = invariance.applies(cfg)
    batch = _internals.LlamaBatch(n_tokens=512, embd=0, n_seq_max=1)
    memory = lc.llama_get_memory(ctx.ctx)
    out: dict[int, list[float]] = {k: [] for k in ROWS}
    try:
        batch.set_batch([100 + (i * 37) % 5000 for i in range(CONTEXT)], n_past=0, logits_all=False)
        invariance.use(on)
        ctx.decode(batch)
        for _ in range(rounds):
            for k in ROWS:
                times = []
                for j in range(reps):
                    lc.llama_memory_seq_rm(memory, 0, CONTEXT, -1)  # the drafted rows of the last step: gone
                    batch.set_batch([7 + j + i for i in range(k)], n_past=CONTEXT, logits_all=True)
                    invariance.use(on)
                    t0 = time.perf_counter()
                    ctx.decode(batch)
                    times.append(time.perf_counter() - t0)
                out[k].append(round(statistics.median(times) * 1000, 3))
    finally:
        batch.close()
        ctx.close()
        model.close()
    return out


def summary(times: dict[int, list[float]]) -> dict[str, dict]:
    one = statistics.median(times[1])
    return {
        str(k): {
            "median_ms": round(statistics.median(v), 2),
            "min_ms": min(v),
            "max_ms": max(v),
            "of_one_row": round(statistics.median(v) / one, 2),
        }
        for k, v in times.items()
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, action="append", help="GGUF file (default: SmolLM2 and Gemma 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=9, help="timed steps per row count in a round")
    ap.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    args = ap.parse_args(argv)
    if not args.model:
        from server.model.files import ensure_gemma, ensure_smollm2

        args.model = [ensure_smollm2(), ensure_gemma()]
    for path in args.model:
        doc: dict = {
            "model": path.name,
            "command": "bench/step_rows.py " + " ".join(argv),
            "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "loadavg_before": os.getloadavg()},
            "settings": {"threads": args.threads, "rounds": args.rounds, "reps": args.reps, "context": CONTEXT},
            "method": "llama_decode of k rows, logits for every row, after a 300-token context, the rows "
            "removed after each step; per round the median of `reps` steps; reported: the median over rounds",
        }
        for mode in ("invariant", "loose"):
            times = time_rows(path, mode == "invariant", args.threads, args.rounds, args.reps)
            doc[mode] = {"rounds_ms": {str(k): v for k, v in times.items()}, "summary": summary(times)}
        doc["host"]["loadavg_after"] = os.getloadavg()
        print(f"\n{path.name}: ms per step by rows (median [min-max] over rounds), and as a share of one row")
        for k in ROWS:
            cells = "   ".join(
                f"{m}: {s['median_ms']:7.2f} [{s['min_ms']:.1f}-{s['max_ms']:.1f}] x{s['of_one_row']:.2f}"
                for m in ("invariant", "loose")
                for s in [doc[m]["summary"][str(k)]]
            )
            print(f"  {k:3} rows   {cells}")
        out = args.out_dir / f"step-rows-{path.stem}.json"
        write_atomic(out, json.dumps(doc, indent=1).encode())
        print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
