"""Make the 7B-shaped Q4_K_M file for the GPU run with the project's own tooling.

`checkpoint`: a Hugging Face checkpoint with random weights and exactly Llama-2-7B's shapes
(bench/_checkpoint.py, the conversion benchmark's writer). `quantize`: converted to f16 GGUF by
`python -m conversion convert`, then `python -m conversion quantize` to Q4_K_M; both need
llama.cpp's library, so this step runs once the CUDA build is installed. Each step is timed
into WORK/model.json; finished outputs are reused (a rerun skips them).

    python bench/gpu/prepare_model.py checkpoint --work bench/.work/gpu --tokenizer tokenizer.model
    python bench/gpu/prepare_model.py quantize --work bench/.work/gpu
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import _checkpoint  # noqa: E402

NAME = "llama2-7b-random"


def timed(record: dict, name: str, argv: list[str]) -> None:
    print("+", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    record[name] = round(time.perf_counter() - t0, 1)


def checkpoint(work: Path, tokenizer: Path, record: dict) -> None:
    ckpt = work / "ckpt"
    shape = _checkpoint.PRESETS["7b"]
    if not _checkpoint.is_complete(ckpt, shape, tokenizer, seed=0):
        t0 = time.perf_counter()
        _checkpoint.write_checkpoint(ckpt, shape, tokenizer, seed=0)
        record["checkpoint_write_s"] = round(time.perf_counter() - t0, 1)


def quantize(work: Path, record: dict) -> None:
    # The converter's CLI loads llama.cpp before numpy (the CUDA build's model load segfaults
    # otherwise), so even the f16 step waits for the build, not only the quantizer.
    ckpt, f16, out = work / "ckpt", work / f"{NAME}.f16.gguf", work / f"{NAME}.Q4_K_M.gguf"
    if not f16.exists():
        timed(
            record,
            "convert_f16_s",
            [sys.executable, "-m", "conversion", "convert", str(ckpt), "--out", str(f16), "--outtype", "f16"],
        )
    if not out.exists():
        timed(
            record,
            "quantize_Q4_K_M_s",
            [sys.executable, "-m", "conversion", "quantize", str(f16), "--out", str(out), "--type", "Q4_K_M"],
        )
    record["Q4_K_M_bytes"] = out.stat().st_size


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["checkpoint", "quantize"])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path, help="Llama 2 tokenizer.model (checkpoint step)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rec_path = a.work / "model.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    if a.step == "checkpoint":
        if not a.tokenizer or not a.tokenizer.is_file():
            p.error("--tokenizer must name a Llama 2 tokenizer.model")
        checkpoint(a.work, a.tokenizer.resolve(), record)
    else:
        quantize(a.work, record)
    rec_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
