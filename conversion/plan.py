"""What a Llama checkpoint becomes in GGUF: hyperparameters, and one plan entry per tensor.

Everything here is decided from config.json and the safetensors headers alone,
before any weight is read, so the GGUF header can be written first and the
data streamed after it. The choices follow llama.cpp's convert_hf_to_gguf.py
(LlamaModel and TextModel): names, order, per-tensor types, q/k permutation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gguf
import numpy as np

from conversion.checkpoint import TensorSource, index_tensors, load_json
from conversion.errors import ConversionError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "LLaMAForCausalLM")
SUPPORTED_TEXT = "LlamaForCausalLM (Llama 1/2, Code Llama, TinyLlama-style)"
QT = gguf.GGMLQuantizationType
FT = gguf.LlamaFileType

# --outtype -> (file type recorded in general.file_type, type of the 2-D weights)
OUTTYPES: dict[str, tuple[FT, QT]] = {
    "f32": (FT.ALL_F32, QT.F32),
    "f16": (FT.MOSTLY_F16, QT.F16),
    "bf16": (FT.MOSTLY_BF16, QT.BF16),
    "q8_0": (FT.MOSTLY_Q8_0, QT.Q8_0),
}
# Buffers that HF checkpoints sometimes carry and GGUF does not need.
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")


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


def load_hparams(hf_dir: Path) -> dict:
    if not hf_dir.is_dir():
        raise ConversionError(f"{hf_dir} is not a directory; expected a Hugging Face checkpoint folder.")
    hparams = load_json(hf_dir / "config.json")
    arch = (hparams.get("architectures") or [None])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ConversionError(
            f"Unsupported architecture {arch!r} in {hf_dir / 'config.json'}. Supported: {SUPPORTED_TEXT}."
        )
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
        if key not in hparams:
            raise ConversionError(f"config.json in {hf_dir} lacks {key!r}; is it a complete Llama config?")
    return with_config_defaults(hparams)


def with_config_defaults(hparams: dict) -> dict:
    """Fill in what transformers' LlamaConfig fills in when config.json leaves it out.

    llama.cpp's converter reads config.json through LlamaConfig, so its metadata
    carries these defaults (Llama-2-7b-chat-hf's config has no rope_theta and no
    head_dim, for instance); applying the same ones gives the same file.
    """
    defaults = {
        "num_key_value_heads": hparams["num_attention_heads"],
        "head_dim": hparams["hidden_size"] // hparams["num_attention_heads"],
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
    }
    if "rope_parameters" in hparams:  # newer configs keep rope_theta there
        del defaults["rope_theta"]
    return {**defaults, **{k: v for k, v in hparams.items() if v is not None or k not in defaults}}


def weight_type(name: str, shape: tuple[int, ...], default: QT) -> QT:
    """llama.cpp's prepare_tensors choice: norms, 1-D and biases stay F32."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return QT.F32
    if default == QT.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[QT.Q8_0][0] != 0:
        return QT.F16  # llama.cpp falls back to F16 when rows do not split into blocks
    return default


def plan_tensors(hf_dir: Path, hparams: dict, outtype: str) -> list[TensorPlan]:
    n_layers = hparams["num_hidden_layers"]
    n_head = hparams["num_attention_heads"]
    n_kv = hparams.get("num_key_value_heads") or n_head
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    default = OUTTYPES[outtype][1]
    plans = []
    for hf_name, src in index_tensors(hf_dir).items():
        if hf_name.endswith(SKIPPED_SUFFIXES):
            continue
        name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConversionError(f"Tensor {hf_name!r} has no GGUF name for {SUPPORTED_TEXT}.")
        heads = (
            n_head
            if hf_name.endswith(("q_proj.weight", "q_proj.bias"))
            else n_kv
            if hf_name.endswith(("k_proj.weight", "k_proj.bias"))
            else 0
        )
        plans.append(
            TensorPlan(name, src, weight_type(name, src.shape, default), src.shape[0] // heads if heads else 0)
        )
    if not plans:
        raise ConversionError(f"No tensors found in the safetensors files of {hf_dir}.")
    return plans
