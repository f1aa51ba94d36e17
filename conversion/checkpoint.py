"""A Hugging Face checkpoint on disk: config, safetensors shards, one tensor at a time.

Headers are parsed by hand (8-byte little-endian length + JSON) so that shapes
and dtypes are known before any weight is read. Data is read with plain file
reads into small buffers, a few rows at a time, never memory-mapped: mapped
pages of a 13 GB checkpoint would pile up in the process's resident memory.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.errors import ConversionError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"

# safetensors dtype -> (numpy dtype as stored, bytes per element)
STORED_DTYPES: dict[str, tuple[np.dtype[Any], int]] = {
    "F32": (np.dtype(np.float32), 4),
    "F16": (np.dtype(np.float16), 2),
    "BF16": (np.dtype(np.uint16), 2),  # numpy has no bfloat16: kept as raw bits
}


@dataclass(frozen=True)
class TensorSource:
    """Where one tensor lies in a shard, from the shard's header."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute byte offset of the data in the file
    nbytes: int

    @property
    def n_rows(self) -> int:
        return self.shape[0] if len(self.shape) > 1 else 1

    @property
    def row_elems(self) -> int:
        n = 1
        for d in self.shape[1:] if len(self.shape) > 1 else self.shape:
            n *= d
        return n

    def read_rows(self, start: int, count: int) -> np.ndarray:
        """Rows [start, start+count) as float16/float32 (bf16 widened exactly to float32)."""
        stored, size = STORED_DTYPES[self.dtype]
        n = count * self.row_elems
        buf = np.empty(n, dtype=stored)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.offset + start * self.row_elems * size)
            got = f.readinto(buf.data.cast("B"))
        if got != n * size:
            raise ConversionError(f"{self.path.name} is truncated: tensor {self.name} is incomplete.")
        if self.dtype == "BF16":
            buf = (buf.astype(np.uint32) << 16).view(np.float32)
        shape = (count, *self.shape[1:]) if len(self.shape) > 1 else self.shape
        return buf.reshape(shape)

    def read(self) -> np.ndarray:
        return self.read_rows(0, self.n_rows)


def load_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConversionError(f"{path.name} is missing from {path.parent}.") from None
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path} is not valid JSON (line {exc.lineno}).") from None


def shard_names(hf_dir: Path) -> list[str]:
    """Shard file names in llama.cpp's order: sorted, from the index when there is one."""
    index = hf_dir / INDEX_FILE
    if index.is_file():
        weight_map = load_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ConversionError(f"{index} has no weight_map.")
        return sorted(set(weight_map.values()))
    if (hf_dir / SINGLE_FILE).is_file():
        return [SINGLE_FILE]
    raise ConversionError(
        f"No safetensors weights in {hf_dir}: expected {SINGLE_FILE} or {INDEX_FILE} with its "
        "shards. Only safetensors checkpoints are supported (not pytorch_model.bin)."
    )


def read_header(path: Path) -> list[TensorSource]:
    """The tensors of one shard, sorted by name as the safetensors library lists them."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise ConversionError(f"Shard {path.name} named by the index is missing from {path.parent}.") from None
    except (struct.error, ValueError):
        raise ConversionError(f"{path} is not a valid safetensors file.") from None
    base = 8 + length
    size = path.stat().st_size
    tensors = []
    for name, meta in sorted(header.items()):
        if name == "__metadata__":
            continue
        # Other dtypes (BERT's I64 position_ids) may be listed; only a tensor that is kept must be
        # readable, which plan.planned_source checks.
        begin, end = meta["data_offsets"]
        if base + end > size:
            raise ConversionError(f"{path.name} is truncated (incomplete download?).")
        tensors.append(TensorSource(name, meta["dtype"], tuple(meta["shape"]), path, base + begin, end - begin))
    return tensors


def index_tensors(hf_dir: Path) -> dict[str, TensorSource]:
    """All tensors of the checkpoint, in the order llama.cpp's converter visits them."""
    tensors: dict[str, TensorSource] = {}
    for shard in shard_names(hf_dir):
        for t in read_header(hf_dir / shard):
            tensors.setdefault(t.name, t)
    index = hf_dir / INDEX_FILE
    if index.is_file():
        expected = set(load_json(index)["weight_map"])
        missing = sorted(expected - set(tensors))
        if missing:
            raise ConversionError(f"Tensors listed in {INDEX_FILE} are missing from the shards: {missing[:5]}")
    return tensors
