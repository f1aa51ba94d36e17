"""Make the 7B-shaped Q4_K_M file for the GPU run with the project's own tooling.

`checkpoint`: a Hugging Face checkpoint with random weights and exactly Llama-2-7B's shapes
(bench/_checkpoint.py, the conversion benchmark's writer). `quantize`: converted to f16 GGUF by
`python -m conversion convert`, then `python -m conversion quantize` to Q4_K_M; both need
llama.cpp's library, so this step runs once the CUDA build is installed. Each step is timed
into WORK/model.json; finished outputs are reused (a rerun skips them).

`--model draft` makes, the same way, a much smaller Llama (4 layers, hidden 1024) with other
random weights (seed 1) and the same tokenizer: a draft model that shares the 7B's vocabulary
but rarely agrees with it, for the speculative bench's mismatched-draft sides; `--model guard` one of
Llama Guard 3-1B's shapes, the moderation bench's guard.

    python bench/gpu/prepare_model.py checkpoint --work bench/.work/gpu --tokenizer tokenizer.model
    python bench/gpu/prepare_model.py quantize --work bench/.work/gpu
    python bench/gpu/prepare_model.py checkpoint --model draft --work bench/.work/gpu --tokenizer tokenizer.model
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
# name -> (file stem, checkpoint folder, shape, seed); rows stay multiples of 256 for k-quants
MODELS = {
    "7b": (NAME, "ckpt", _checkpoint.PRESETS["7b"], 0),
    "draft": (
        "llama2-draft-4l-random",
        "ckpt-draft",
        _checkpoint.Shape(hidden=1024, intermediate=2816, layers=4, heads=8, kv_heads=8),
        1,
    ),
    # Llama Guard 3-1B's shapes (Llama 3.2 1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192) with
    # the 7B's tokenizer: random weights, for the moderation bench (latency does not depend on the weights).
    "guard": (
        "llama-guard-3-1b-shape-random",
        "ckpt-guard",
        _checkpoint.Shape(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8),
        2,
    ),
}


def timed(record: dict, name: str, argv: list[str]) -> None:
    print("+", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, cwd=REPO)
    record[name] = round(time.perf_counter() - t0, 1)


def checkpoint(work: Path, tokenizer: Path, record: dict, model: str = "7b") -> None:
    _, folder, shape, seed = MODELS[model]
    ckpt = work / folder
    if not _checkpoint.is_complete(ckpt, shape, tokenizer, seed=seed):
        t0 = time.perf_counter()
        _checkpoint.write_checkpoint(ckpt, shape, tokenizer, seed=seed)
        record["checkpoint_write_s"] = round(time.perf_counter() - t0, 1)


def quantize(work: Path, record: dict, model: str = "7b") -> None:
    # The converter's CLI loads llama.cpp before numpy (the CUDA build's model load segfaults
    # otherwise), so even the f16 step waits for the build, not only the quantizer.
    name, folder, _, _ = MODELS[model]
    ckpt, f16, out = work / folder, work / f"{name}.f16.gguf", work / f"{name}.Q4_K_M.gguf"
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
    p.add_argument("--model", choices=sorted(MODELS), default="7b", help="which model (default: 7b)")
    a = p.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rec_path = a.work / ("model.json" if a.model == "7b" else f"model-{a.model}.json")
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    if a.step == "checkpoint":
        if not a.tokenizer or not a.tokenizer.is_file():
            p.error("--tokenizer must name a Llama 2 tokenizer.model")
        checkpoint(a.work, a.tokenizer.resolve(), record, a.model)
    else:
        quantize(a.work, record, a.model)
    rec_path.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
