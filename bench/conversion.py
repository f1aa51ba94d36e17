"""Conversion benchmark: our torch-free converter against llama.cpp's convert_hf_to_gguf.py.

Writes a checkpoint with random weights and exactly Llama-2-7B's shapes (fp16, 13.5 GB),
converts it to f16 GGUF with both converters, quantizes ours to Q4_K_M, and records
wall time, CPU time and peak RSS of each step (each in its own process) and the file
sizes, side by side in one run. Both f16 outputs are compared tensor by tensor.
Prints a table and writes bench/results/conversion.json.

    python bench/conversion.py                 # the full run (needs ~45 GB free disk)
    python bench/conversion.py --sides ref     # only llama.cpp's converter
    python bench/conversion.py --preset tiny   # a seconds-long smoke run of the whole thing
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import _checkpoint
import _refenv
import _report
from _measure import disk_free_bytes, git_commit, machine_info, package_versions, run_step, warm_page_cache

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
GB = 1e9


@dataclass(frozen=True)
class Settings:
    preset: str
    tokenizer: Path
    work: Path
    results: Path
    sides: tuple[str, ...]
    repeat: int
    quant: str
    quant_repeat: int
    threads: int | None
    rebuild: bool
    keep: bool


def parse_args(argv: list[str]) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(_checkpoint.PRESETS), default="7b")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=REPO.parent / "shared" / "data" / "llama2-tokenizer.model",
        help="Llama 2 SentencePiece model to put in the checkpoint (default: %(default)s)",
    )
    p.add_argument("--work", type=Path, default=HERE / ".work", help="scratch space (default: %(default)s)")
    p.add_argument("--results", type=Path, help="results JSON (default: bench/results/conversion[-...].json)")
    p.add_argument("--sides", default="ours,ref", help="ours, ref or both (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=4, help="rounds; the order of the sides alternates")
    p.add_argument("--quant", default="Q4_K_M", help="type for our quantize step (default: %(default)s)")
    # Quantizing 7B takes minutes on 2 cores, so by default only the first round does it.
    p.add_argument("--quant-repeat", type=int, default=1, help="rounds that also quantize (default: %(default)s)")
    p.add_argument("--threads", type=int, help="threads for our quantizer (default: its own)")
    p.add_argument("--rebuild", action="store_true", help="write the checkpoint again even if complete")
    p.add_argument("--keep", action="store_true", help="keep the GGUF outputs of the last round")
    a = p.parse_args(argv)
    sides = tuple(s for s in ("ours", "ref") if s in a.sides.split(","))
    if not sides or a.repeat < 1:
        p.error("--sides needs ours and/or ref, and --repeat at least 1")
    if not a.tokenizer.is_file():
        p.error(f"tokenizer not found: {a.tokenizer} (pass --tokenizer PATH to a Llama 2 tokenizer.model)")
    suffix = "" if (a.preset, sides) == ("7b", ("ours", "ref")) else f"-{a.preset}-{'-'.join(sides)}"
    results = a.results or HERE / "results" / f"conversion{suffix}.json"
    return Settings(
        a.preset,
        a.tokenizer.resolve(),
        a.work.resolve(),
        results,
        sides,
        a.repeat,
        a.quant,
        a.quant_repeat,
        a.threads,
        a.rebuild,
        a.keep,
    )


def ensure_checkpoint(s: Settings) -> tuple[Path, float | None]:
    """Reuse a complete checkpoint (its marker matches); else write it. Returns (dir, seconds written)."""
    shape = _checkpoint.PRESETS[s.preset]
    ckpt = s.work / f"llama2-{s.preset}-random"
    if not s.rebuild and _checkpoint.is_complete(ckpt, shape, s.tokenizer, seed=0):
        return ckpt, None
    start = time.perf_counter()
    print(f"writing the {s.preset} checkpoint to {ckpt} ...", flush=True)
    _checkpoint.write_checkpoint(ckpt, shape, s.tokenizer, seed=0)
    return ckpt, time.perf_counter() - start


def convert_command(side: str, ckpt: Path, out: Path, ref_py: Path | None, llama_cpp: Path | None) -> list[str]:
    if side == "ours":
        return [sys.executable, "-m", "conversion", "convert", str(ckpt), "--out", str(out), "--outtype", "f16"]
    return [str(ref_py), str(llama_cpp / "convert_hf_to_gguf.py"), str(ckpt), "--outfile", str(out), "--outtype", "f16"]


def step_env(side: str) -> dict:
    env = dict(os.environ)
    # The reference must import llama.cpp's own `conversion` package, never ours.
    env.pop("PYTHONPATH", None)
    if side == "ours":
        env["PYTHONPATH"] = str(REPO)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return env


def summarize(gguf_path: Path, out: Path) -> dict:
    """Hash the file's tensors in a separate process (so this one stays small)."""
    subprocess.run([sys.executable, str(HERE / "_gguf_summary.py"), str(gguf_path), str(out)], check=True)
    return json.loads(out.read_text())


def run_rounds(s: Settings, ckpt: Path, ref_py: Path | None, llama_cpp: Path | None) -> dict:
    runs, sizes, summaries, warmups, orders = [], {}, {}, [], []
    logs = s.work / "logs"
    shards = sorted(ckpt.glob("*.safetensors"))
    for rnd in range(s.repeat):
        order = s.sides if rnd % 2 == 0 else tuple(reversed(s.sides))
        orders.append(list(order))
        for side in order:
            name = "ours_convert_f16" if side == "ours" else "llamacpp_convert_f16"
            out = s.work / f"{s.preset}-{side}-f16.gguf"
            out.unlink(missing_ok=True)
            warmups.append(round(warm_page_cache(shards), 2))
            print(f"round {rnd + 1}: {name} ...", flush=True)
            res = run_step(
                name,
                convert_command(side, ckpt, out, ref_py, llama_cpp),
                logs / f"{s.preset}-{name}-{rnd + 1}.log",
                env=step_env(side),
                cwd=REPO,
            )
            runs.append(res.as_dict())
            if res.returncode != 0:
                print(f"  failed ({res.returncode}); see {res.log}", flush=True)
                continue
            sizes[name] = out.stat().st_size
            if rnd == 0:
                summaries[side] = summarize(out, s.work / f"{s.preset}-{side}-f16.summary.json")
            if side == "ours" and rnd < s.quant_repeat:
                runs.append(quantize_step(s, out, rnd, sizes, summaries))
            if not s.keep:
                out.unlink()
    return {"runs": runs, "sizes": sizes, "summaries": summaries, "warm_cache_s": warmups, "orders": orders}


def quantize_step(s: Settings, f16: Path, rnd: int, sizes: dict, summaries: dict) -> dict:
    name = f"ours_quantize_{s.quant}"
    out = s.work / f"{s.preset}-ours-{s.quant}.gguf"
    out.unlink(missing_ok=True)
    os.sync()  # the f16 input was just written: flush it so its write-back is not timed here
    cmd = [sys.executable, "-m", "conversion", "quantize", str(f16), "--out", str(out), "--type", s.quant]
    if s.threads:
        cmd += ["--threads", str(s.threads)]
    print(f"round {rnd + 1}: {name} ...", flush=True)
    res = run_step(name, cmd, s.work / "logs" / f"{s.preset}-{name}-{rnd + 1}.log", env=step_env("ours"), cwd=REPO)
    if res.returncode == 0:
        sizes[name] = out.stat().st_size
        if rnd == 0:
            summaries["quantized"] = summarize(out, s.work / f"{s.preset}-ours-{s.quant}.summary.json")
        if not s.keep:
            out.unlink()
    return res.as_dict()


def prepare_reference(s: Settings, versions: dict) -> tuple[Path | None, Path | None]:
    """The reference converter's source and environment, when the run includes it."""
    if "ref" not in s.sides:
        return None, None
    setup_log = s.work / "logs" / "ref-setup.log"
    setup_log.parent.mkdir(parents=True, exist_ok=True)
    llama_cpp = _refenv.fetch_source(s.work, setup_log)
    ref_py = _refenv.ensure_ref_venv(s.work, llama_cpp, setup_log)
    versions["llama.cpp_converter_env"] = _refenv.ref_versions(ref_py)
    return ref_py, llama_cpp


def main(argv: list[str]) -> int:
    s = parse_args(argv)
    s.work.mkdir(parents=True, exist_ok=True)
    # Two runs of one preset would delete each other's outputs mid-step.
    lock = open(s.work / f"{s.preset}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another {s.preset} run is using {s.work}; wait for it to finish", file=sys.stderr)
        return 1
    machine = machine_info()
    # Taken at the start: the code measured is the code checked out now.
    revision = {
        "git_commit": git_commit(REPO),
        "conversion_uncommitted_changes": bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "conversion"], capture_output=True, text=True
            ).stdout.strip()
        ),
    }
    ckpt, written_s = ensure_checkpoint(s)
    ckpt_bytes = sum(f.stat().st_size for f in ckpt.iterdir())
    # At once on disk: one f16 output and its quantized copy, or with --keep both f16 outputs.
    need = ckpt_bytes * (2.4 if s.keep else 1.4)
    if disk_free_bytes(s.work) < need:
        print(f"not enough free disk under {s.work}: need about {need / GB:.0f} GB", file=sys.stderr)
        return 1
    versions = {"ours": package_versions(["numpy", "gguf", "llama_cpp_python", "sentencepiece"])}
    ref_py, llama_cpp = prepare_reference(s, versions)
    measured = run_rounds(s, ckpt, ref_py, llama_cpp)
    shown = str(ckpt.relative_to(REPO)) if ckpt.is_relative_to(REPO) else str(ckpt)
    doc = _report.results_document(
        " ".join(["python", "bench/conversion.py"] + argv),
        s.preset,
        {
            "dir": shown,
            "bytes": ckpt_bytes,
            "written_s": written_s,
            "reused": written_s is None,
            "shape": vars(_checkpoint.PRESETS[s.preset]),
        },
        {**revision, "machine": {**machine, "loadavg_end": list(os.getloadavg())}, "versions": versions},
        measured,
    )
    print(_report.table(doc["medians"], doc["file_bytes"], doc["ratios"], doc["byte_identity"]))
    _report.write_json(s.results, doc)
    print(f"results: {s.results}")
    print(
        f"the checkpoint stays in {shown} for the next run (--rebuild writes it anew; delete it to free "
        f"{ckpt_bytes / GB:.1f} GB)"
    )
    failed = any(r["returncode"] != 0 for r in measured["runs"])
    identity = doc["byte_identity"]
    return 1 if failed or (identity and identity["verdict"] != "PASS") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
