"""A fast read of a GGUF header: scalar metadata and each tensor's name and size.

gguf.GGUFReader builds Python objects for every element of every array, which
takes seconds on a 256k-token vocabulary; offload planning at start-up needs
only scalars and tensor sizes, so this walks the header with struct and skips
arrays (it still reads their string lengths, which is fast). Sizes come from
gguf's own table of block sizes per quantization type.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFInfo:
    metadata: dict[str, object]  # scalars and strings; arrays as their length
    tensor_bytes: dict[str, int]  # tensor name -> bytes in the file
    arrays: frozenset[str] = frozenset()  # the metadata keys that hold arrays


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("<Q")
        self.pos += n
        return bytes(self.buf[self.pos - n : self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.take(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.take("<I"), self.take("<Q")
            if item in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[item])
            else:
                for _ in range(count):
                    self.value(item)
            return count
        raise ValueError(f"unknown GGUF value type {kind}")


def read_gguf_info(path: Path) -> GGUFInfo:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        cur = _Cursor(buf)
        if bytes(buf[:4]) != b"GGUF":
            raise ValueError(f"not a GGUF file: {path}")
        cur.pos = 4
        _version, n_tensors, n_kv = cur.take("<I"), cur.take("<Q"), cur.take("<Q")
        metadata, arrays = {}, set()
        for _ in range(n_kv):
            key = cur.string()
            kind = cur.take("<I")
            metadata[key] = cur.value(kind)
            if kind == _ARRAY:
                arrays.add(key)
        sizes = {}
        for _ in range(n_tensors):
            name = cur.string()
            dims = [cur.take("<Q") for _ in range(cur.take("<I"))]
            kind, _offset = cur.take("<I"), cur.take("<Q")
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            elements = 1
            for d in dims:
                elements *= d
            sizes[name] = elements // block * block_bytes
        return GGUFInfo(metadata, sizes, frozenset(arrays))
