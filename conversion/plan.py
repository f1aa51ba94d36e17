"""What a checkpoint becomes in GGUF, for any architecture: one plan entry per tensor.

Everything is decided from config.json and the safetensors headers alone, before
any weight is read, so the GGUF header can be written first and the data streamed
after it. The per-architecture modules (llama.py, bert.py) decide names and order;
the rules shared by all of them are here, as in llama.cpp's convert_hf_to_gguf.py
(ModelBase.prepare_tensors): which tensors stay F32, the Q8_0 fallback, encodings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gguf
import numpy as np

from conversion.checkpoint import STORED_DTYPES, TensorSource
from conversion.errors import ConversionError

QT = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# --outtype -> (file type recorded in general.file_type, type of the 2-D weights)
OUTTYPES: dict[str, tuple[FT, QT]] = {
    "f32": (FT.ALL_F32, QT.F32),
    "f16": (FT.MOSTLY_F16, QT.F16),
    "bf16": (FT.MOSTLY_BF16, QT.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, QT.Q8_0),
}


@dataclass(frozen=True)
class Options:
    """Choices beyond the output type; each one is named where an architecture reads it."""

    keep_pooler: bool = False  # bert.py: a reranker keeps its pooler (not byte-identical to llama.cpp)


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate_half q/k row order -> GGML's interleaved rope order (LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where its data comes from and how it is encoded."""

    name: str
    source: TensorSource
    qtype: QT
    head_rows: int = 0  # >0: rows come in heads of this many rows, permuted per head

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def nbytes(self) -> int:
        # GGML_QUANT_SIZES gives (elements, bytes) per block for every type, floats included
        n = 1
        for d in gguf.quant_shape_to_byte_shape(self.shape, self.qtype):
            n *= d
        return n

    def encode(self, rows: np.ndarray) -> np.ndarray:
        """Rows of the source (float16/float32) -> the bytes llama.cpp's converter writes."""
        if self.head_rows:
            rows = permute(rows, rows.shape[0] // self.head_rows)
        return _ENCODERS[self.qtype](rows)


_ENCODERS: dict[QT, Callable[[np.ndarray], np.ndarray]] = {
    QT.F32: lambda a: a.astype(np.float32, copy=False),
    QT.F16: lambda a: a.astype(np.float16, copy=False),
    QT.BF16: lambda a: gguf.quants.quantize(a, QT.BF16),
    QT.Q8_0: lambda a: gguf.quants.quantize(a, QT.Q8_0),
}


def weight_type(name: str, shape: tuple[int, ...], default: QT, keep_f32: bool = False) -> QT:
    """llama.cpp's prepare_tensors choice: norms, 1-D, biases (and `keep_f32` tensors) stay F32."""
    if keep_f32 or len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return QT.F32
    if default == QT.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[QT.Q8_0][0] != 0:
        return QT.F16  # llama.cpp falls back to F16 when rows do not split into blocks
    return default


def planned_source(src: TensorSource) -> TensorSource:
    """A tensor that is kept must be readable: refuse other dtypes now, before writing anything."""
    if src.dtype not in STORED_DTYPES:
        raise ConversionError(f"{src.name} in {src.path.name} is {src.dtype}; supported: F32, F16, BF16.")
    return src


def first(hp: dict, *keys: str):
    return next((hp[k] for k in keys if k in hp), None)
