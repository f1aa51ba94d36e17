"""What GPU a result was measured on: name, driver, CUDA version, memory (from nvidia-smi and nvcc)."""

from __future__ import annotations

import re
import subprocess

QUERY = "name,driver_version,memory.total,memory.used,pci.bus_id"


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def gpu_info() -> dict:
    """One dict for the first GPU; empty values when nvidia-smi is missing."""
    rows = [
        r.split(", ")
        for r in _run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"]).strip().splitlines()
    ]
    first = dict(zip(QUERY.split(","), rows[0])) if rows else {}
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", _run(["nvidia-smi"]))
    nvcc = re.search(r"release ([\d.]+)", _run(["nvcc", "--version"]))
    return {
        "gpu": first.get("name"),
        "gpus": len(rows),
        "driver": first.get("driver_version"),
        "cuda_driver_api": cuda.group(1) if cuda else None,
        "cuda_toolkit": nvcc.group(1) if nvcc else None,
        "memory_total_mib": int(first["memory.total"]) if first else None,
    }


def used_mib() -> int | None:
    """Device memory in use on GPU 0, as nvidia-smi counts it (all processes)."""
    out = _run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]).split()
    return int(out[0]) if out else None
