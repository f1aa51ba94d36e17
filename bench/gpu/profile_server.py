"""Where our server's time per token goes on the GPU: py-spy samples it while one client streams.

Starts the real server (as bench/serve.py does, all layers on the GPU), keeps one client
streaming 128-token answers back to back, and has py-spy sample every thread of the
gunicorn worker (idle ones too, without pausing the process) for --seconds. Writes py-spy's
collapsed stacks (one line per stack: frames separated by ';', then the sample count) to
--out, and the decode speeds seen while sampling to --out with .json. Read the stacks with
bench/gpu/summarize_server.py: the share of the decode thread's samples inside llama_decode
is the GPU's share of each token; the rest is Python between tokens.

    python bench/gpu/profile_server.py --model m.gguf --out profile-raw.txt
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import serve  # noqa: E402  (imports the server package, so llama_cpp before anything else)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--threads", type=int, default=serve.physical_cores())
    p.add_argument("--n-gpu-layers", default="-1")
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--rate", type=int, default=200, help="samples per second")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(pyspy).exists():
        print("py-spy is not installed here (it travels as a wheel in the bundle)", file=sys.stderr)
        return 1
    opts = argparse.Namespace(
        n_ctx=1024, n_gpu_layers=a.n_gpu_layers, threads=a.threads, tokens=128, flash_attn="auto", vram_budget_mb=None
    )
    proc, base, health = serve.start_server(a.model.resolve(), opts)
    speeds: list[float] = []
    try:
        serve.via_http(base, serve.question(-1), 128)  # warm-up
        # --nonblocking: sampling must not stop the process it measures.
        spy = subprocess.Popen(
            [
                pyspy,
                "record",
                "--pid",
                str(proc.pid),
                "--subprocesses",
                "--idle",
                "--threads",
                "--nonblocking",
                "--rate",
                str(a.rate),
                "--duration",
                str(a.seconds),
                "--format",
                "raw",
                "--output",
                str(a.out),
            ]
        )
        i = 0
        while spy.poll() is None:
            speeds.append(serve.via_http(base, serve.question(i), 128)["decode_tps"])
            i += 1
        rc = spy.wait()
    finally:
        proc.terminate()
        proc.wait(60)
    record = {
        "py_spy_rc": rc,
        "seconds": a.seconds,
        "rate": a.rate,
        "decode_tps_while_sampled": speeds,
        "server_offload": health.get("offload"),
        "server_parallel": health.get("parallel"),
    }
    a.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
