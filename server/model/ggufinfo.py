"""A fast read of a GGUF header: scalar metadata and each tensor's name, size and place.

gguf.GGUFReader builds Python objects for every element of every array, which
takes seconds on a 256k-token vocabulary; offload planning at start-up needs
only scalars and tensor sizes, so this walks the header with struct and skips
arrays (it still reads their string lengths, which is fast). Sizes come from
gguf's own table of block sizes per quantization type. A header that runs past
the end of the file, or names an unknown type, raises ValueError saying so;
where each tensor's data lies (`tensor_spans`) lets a caller check that the file
holds all of it (server/model/files.py does, before the server starts).
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_DEFAULT_ALIGNMENT = 32
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFInfo:
    metadata: dict[str, Any]  # scalars and strings; arrays as their length
    tensor_bytes: dict[str, int]  # tensor name -> bytes in the file
    tensor_spans: dict[str, tuple[int, int]]  # tensor name -> (first byte, end) in the file
    file_bytes: int
    arrays: frozenset[str] = frozenset()  # the metadata keys that hold arrays


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.buf):
            raise ValueError(f"the header runs past the end of the file ({len(self.buf)} bytes): it is truncated")

    def take(self, fmt: str) -> Any:  # what struct unpacked: int, float or bool
        size = struct.calcsize(fmt)
        self.skip(size)
        return struct.unpack_from(fmt, self.buf, self.pos - size)[0]

    def skip_strings(self, count: int) -> None:
        """Step over `count` strings reading only their lengths (a vocabulary of 262k tokens:
        decoding each one cost most of a header read)."""
        pos, buf, unpack, end = self.pos, self.buf, struct.unpack_from, len(self.buf)
        for _ in range(count):
            if pos + 8 > end:
                break
            pos += 8 + unpack("<Q", buf, pos)[0]
        else:
            if pos <= end:
                self.pos = pos
                return
        self.pos = end
        self.skip(1)  # raises: the header runs past the end of the file

    def string(self) -> str:
        n = self.take("<Q")
        self.skip(n)
        return bytes(self.buf[self.pos - n : self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int) -> object:
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item]))
            elif item == _STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.value(item)
            return count
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_info(path: Path) -> GGUFInfo:
    """The header of the GGUF file at `path`; ValueError saying what is wrong with it. Kept per
    version of the file (size and time): loading a model reads it for its plan, its memory
    estimate and its description."""
    stat = Path(path).stat()
    return _read_file(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _read_file(path: str, _size: int, _mtime_ns: int) -> GGUFInfo:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file (bad magic bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _read(buf)


def _read(buf: mmap.mmap) -> GGUFInfo:
    cur = _Cursor(buf)
    cur.pos = 4
    version, n_tensors, n_kv = cur.take("<I"), cur.take("<Q"), cur.take("<Q")
    if version not in (2, 3):
        raise ValueError(f"GGUF version {version} is not supported (2 or 3 is)")
    metadata: dict[str, Any] = {}
    arrays: set[str] = set()
    for _ in range(n_kv):
        key = cur.string()
        kind = cur.take("<I")
        metadata[key] = cur.value(kind)
        if kind == _ARRAY:
            arrays.add(key)
    sizes: dict[str, int] = {}
    offsets: dict[str, int] = {}
    for _ in range(n_tensors):
        name = cur.string()
        dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
        kind, offsets[name] = cur.take("<I"), cur.take("<Q")
        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise ValueError(f"tensor {name!r} has an unknown type {kind}") from None
        elements = 1
        for d in dims:
            elements *= d
        sizes[name] = elements // block * block_bytes
    align = metadata.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(align, int) or align <= 0:
        raise ValueError(f"general.alignment is {align!r}, not a positive number")
    data = -(-cur.pos // align) * align  # tensor data starts at the next aligned offset
    spans = {name: (data + offsets[name], data + offsets[name] + sizes[name]) for name in sizes}
    return GGUFInfo(metadata, sizes, spans, len(buf), frozenset(arrays))
