"""Pin llama.cpp's converter's BERT outputs: regenerate bert_reference.json (sha256 and size per case).

The test suite proves byte identity without torch: it converts each case with our converter
and compares the sha256 with the one llama.cpp's own convert_hf_to_gguf.py gave here, at the
version the pinned llama-cpp-python vendors. This script makes those hashes again:

    python -m tests.conversion.bert_reference [--work bench/.work] [--keep bench/.work/bert-reference]

It also pins transformers' token ids for the oracle test's texts (minilm_hf_ids.json), so that
llama.cpp's tokenization can be checked against them without transformers here.

It fetches the llama-cpp-python sdist and builds the reference environment with torch once
(bench/_refenv.py, under --work), fetches all-MiniLM-L6-v2 into models/, writes the tiny
reranker, converts every case with llama.cpp's converter and keeps the reference GGUFs under
--keep, where the test finds them to name the first difference when a hash does not match.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HASHES = Path(__file__).with_name("bert_reference.json")
HF_IDS = Path(__file__).with_name("minilm_hf_ids.json")
# Run in the reference environment: the ids transformers' tokenizer gives each text (stdin, JSON).
HF_TOKENIZE = (
    "import json, sys; from transformers import AutoTokenizer; "
    "tok = AutoTokenizer.from_pretrained(sys.argv[1]); "
    "print(json.dumps([tok.encode(t) for t in json.load(sys.stdin)]))"
)
KEEP = REPO / "bench" / ".work" / "bert-reference"  # git-ignored
CASES = {  # case -> (checkpoint, outtype)
    "minilm-f16": ("minilm", "f16"),
    "minilm-f32": ("minilm", "f32"),
    "tiny-reranker-f16": ("reranker", "f16"),
    "tiny-reranker-f32": ("reranker", "f32"),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def reranker_dir(keep: Path, minilm: Path) -> Path:
    from tests.tiny_bert import RERANKER_FOLDER, write_tiny_reranker

    return write_tiny_reranker(keep / "checkpoints" / RERANKER_FOLDER, minilm)


def reference_converter(work: Path) -> tuple[Path, Path, dict]:
    """(python of the reference environment, convert_hf_to_gguf.py, versions), built once under work."""
    sys.path.append(str(REPO / "bench"))  # appended: bench/conversion.py must not shadow the package
    import _refenv

    work.mkdir(parents=True, exist_ok=True)
    log = work / "refenv-setup.log"
    llama_cpp = _refenv.fetch_source(work, log)
    py = _refenv.ensure_ref_venv(work, llama_cpp, log)
    versions = {"llama-cpp-python": _refenv.pinned_llama_cpp_version(), **_refenv.ref_versions(py)}
    return py, llama_cpp / "convert_hf_to_gguf.py", versions


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)


def pin_hf_ids(py: Path, minilm: Path) -> None:
    from tests.conversion.test_bert_oracle import TEXTS

    done = subprocess.run(
        [str(py), "-c", HF_TOKENIZE, str(minilm)], input=json.dumps(TEXTS), capture_output=True, text=True, check=True
    )
    ids = json.loads(done.stdout)
    write_atomically(HF_IDS, json.dumps({"texts": TEXTS, "ids": ids}, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=REPO / "bench" / ".work", help="reference environment (%(default)s)")
    p.add_argument("--keep", type=Path, default=KEEP, help="where the reference GGUFs stay (%(default)s)")
    a = p.parse_args(argv)
    from conversion.packaged import ensure_checkpoint

    checkpoints = {"minilm": ensure_checkpoint()}
    checkpoints["reranker"] = reranker_dir(a.keep, checkpoints["minilm"])
    py, script, versions = reference_converter(a.work.resolve())
    cases = {}
    for case, (which, outtype) in CASES.items():
        out = a.keep / f"{case}.gguf"
        command = [str(py), str(script), str(checkpoints[which]), "--outfile", str(out), "--outtype", outtype]
        subprocess.run(command, check=True, capture_output=True)
        cases[case] = {"sha256": sha256_of(out), "size": out.stat().st_size}
        print(f"{case}: {cases[case]['sha256']}  {cases[case]['size']} B", flush=True)
    write_atomically(HASHES, json.dumps({"reference": versions, "cases": cases}, indent=2) + "\n")
    pin_hf_ids(py, checkpoints["minilm"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
