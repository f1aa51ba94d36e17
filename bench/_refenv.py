"""The reference side of the conversion benchmark: llama.cpp's own converter.

Fetches the llama-cpp-python source package pinned in requirements.txt (it vendors
llama.cpp, whose convert_hf_to_gguf.py and gguf-py are the reference), and builds a
separate virtual environment with torch and the converter's imports, so the
project's own environment never needs torch.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# torch is pinned exactly and installed alone first; the constraint file then keeps
# every later install from swapping it (for example for a CUDA build).
TORCH_PIN = "torch==2.13.0"
# What convert_hf_to_gguf.py imports for a Llama checkpoint, with the version ranges
# of llama.cpp's own requirements/requirements-convert_*.txt (torch aside).
CONVERTER_DEPS = [
    "numpy~=2.2.6",
    "sentencepiece>=0.1.98,<0.3.0",
    "transformers==4.57.6",
    "protobuf>=4.21.0,<5.0.0",
    "safetensors",
]


class RefEnvError(RuntimeError):
    """The reference converter's source or environment could not be prepared."""


def pinned_llama_cpp_version() -> str:
    text = (REPO / "requirements.txt").read_text()
    match = re.search(r"^llama-cpp-python==(\S+)", text, re.MULTILINE)
    if not match:
        raise RefEnvError("requirements.txt pins no llama-cpp-python version")
    return match.group(1)


def _run(cmd: list[str], log: Path) -> None:
    """Run one setup command, appending its output to `log`; fail with a pointer to it."""
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RefEnvError(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")


def fetch_source(work: Path, log: Path) -> Path:
    """Download and unpack the pinned llama-cpp-python sdist; return vendor/llama.cpp."""
    version = pinned_llama_cpp_version()
    dest = work / "src"
    unpacked = dest / f"llama_cpp_python-{version}"
    llama_cpp = unpacked / "vendor" / "llama.cpp"
    if (llama_cpp / "convert_hf_to_gguf.py").is_file():
        return llama_cpp
    dest.mkdir(parents=True, exist_ok=True)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={version}",
            "-d",
            str(dest),
        ],
        log,
    )
    sdists = sorted(dest.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not sdists:
        raise RefEnvError(f"pip download left no llama_cpp_python-{version}.tar.gz in {dest}")
    with tarfile.open(sdists[0]) as tar:
        tar.extractall(dest, filter="data")
    if not (llama_cpp / "convert_hf_to_gguf.py").is_file():
        raise RefEnvError(f"no convert_hf_to_gguf.py under {llama_cpp}")
    return llama_cpp


def ensure_ref_venv(work: Path, llama_cpp: Path, log: Path) -> Path:
    """Create work/ref-venv once (a marker says it is complete); return its python."""
    venv = work / "ref-venv"
    py = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.is_file():
        return py
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], log)
    pip = [str(py), "-m", "pip", "install", "--disable-pip-version-check"]
    _run(pip + [TORCH_PIN], log)
    constraints = venv / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _run(pip + ["-c", str(constraints)] + CONVERTER_DEPS, log)
    # gguf-py from the same source as the converter; its own deps came with transformers.
    _run(pip + ["-c", str(constraints), "--no-deps", str(llama_cpp / "gguf-py")], log)
    check = (
        "import torch, transformers, gguf, sentencepiece; "
        "assert torch.version.cuda is None, 'a CUDA build of torch was installed'; "
        "print(torch.__version__, transformers.__version__)"
    )
    _run([str(py), "-c", check], log)
    marker.write_text("ok\n")
    return py


def ref_versions(py: Path) -> dict[str, str]:
    """Versions of the reference environment's key packages, for the results file."""
    code = (
        "import json, torch, transformers, numpy, gguf, sentencepiece, importlib.metadata as m; "
        "print(json.dumps({k: m.version(k) for k in "
        "['torch', 'transformers', 'numpy', 'gguf', 'sentencepiece', 'safetensors']}))"
    )
    out = subprocess.run([str(py), "-c", code], capture_output=True, text=True, check=True)
    import json

    return json.loads(out.stdout)
