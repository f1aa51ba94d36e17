"""llama.cpp's error lines while a model loads, kept rather than printed.

When a file fails to load, llama.cpp says why on stderr, over several lines, and
llama-cpp-python then raises a generic "failed to load model". Capturing those
lines lets the engine report one line of its own that names the file and carries
llama.cpp's reason, with nothing else on the console. Outside `captured_errors`
llama-cpp-python's own log callback is in place, as usual.
"""

from __future__ import annotations

import contextlib
import ctypes
import re
from typing import Iterator

import llama_cpp
from llama_cpp import _logger

# ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5 (a continued line).
# (llama-cpp-python's own callback still maps the older numbering, in which 3 was ERROR.)
_ERROR, _CONTINUED = 4, 5


@contextlib.contextmanager
def captured_errors(sizes: list[str] | None = None) -> Iterator[list[str]]:
    """Within the block, llama.cpp's error lines go into the yielded list, not to stderr;
    its "... buffer size = N MiB" lines into `sizes`, when given (see buffer_sizes)."""
    lines: list[str] = []
    last = [0]

    def keep(level: int, text: bytes, _user_data: object) -> None:
        if level == _ERROR or (level == _CONTINUED and last[0] == _ERROR):
            lines.append(text.decode("utf-8", errors="replace"))
        elif sizes is not None and b"buffer size" in text:
            sizes.append(text.decode("utf-8", errors="replace"))
        if level != _CONTINUED:
            last[0] = level

    callback = llama_cpp.llama_log_callback(keep)  # referenced until restored: ctypes must not free it
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


def one_line(lines: list[str]) -> str:
    """llama.cpp's lines joined into one, repeated lines once."""
    said = [" ".join(line.split()) for line in "".join(lines).splitlines()]
    return "; ".join(dict.fromkeys(s for s in said if s))


# "load_tensors:   CPU_Mapped model buffer size =    88.16 MiB", "llama_kv_cache:   CUDA0 KV buffer size = ..."
_SIZE = re.compile(r"(\S+) (model|KV|compute|RS|output) buffer size =\s*([\d.]+) MiB")
KINDS = {"model": "weights", "KV": "kv", "RS": "kv", "compute": "compute", "output": "compute"}


def buffer_sizes(lines: list[str]) -> dict[str, int]:
    """llama.cpp's buffer sizes by kind and place, in bytes: {"weights_ram": ..., "kv_vram": ...}.
    A buffer is in VRAM unless its device is the CPU's (CPU, CPU_Mapped, CPU_REPACK) or a
    GPU's pinned host memory (CUDA_Host), as Ollama counts them."""
    found: dict[str, int] = {}
    for line in lines:
        for device, kind, mib in _SIZE.findall(line):
            place = "ram" if device.startswith("CPU") or device.endswith("_Host") or device == "BLAS" else "vram"
            name = f"{KINDS[kind]}_{place}"
            found[name] = found.get(name, 0) + int(float(mib) * (1 << 20))
    return found
