"""Llama (LlamaForCausalLM): hyperparameters, tensor plan and metadata as llama.cpp's LlamaModel writes them.

Names, order, per-tensor types and the q/k permutation follow convert_hf_to_gguf.py
(LlamaModel and TextModel); the SentencePiece vocabulary is in llama_vocab.py.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from conversion.checkpoint import index_tensors
from conversion.errors import ConversionError
from conversion.llama_vocab import add_vocab
from conversion.plan import OUTTYPES, Options, TensorPlan, first, planned_source, weight_type

HF_NAMES = ("LlamaForCausalLM", "LLaMAForCausalLM")
DESCRIPTION = "LlamaForCausalLM (Llama 1/2, Code Llama, TinyLlama-style)"
REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
# Buffers that HF checkpoints sometimes carry and GGUF does not need.
SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_ctx",
    "n_positions",
    "max_length",
    "max_sequence_length",
    "model_max_length",
)
__all__ = ["HF_NAMES", "DESCRIPTION", "REQUIRED", "with_config_defaults", "plan_tensors", "add_parameters", "add_vocab"]


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


def plan_tensors(hf_dir: Path, hparams: dict, outtype: str, options: Options) -> list[TensorPlan]:
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
            raise ConversionError(f"Tensor {hf_name!r} has no GGUF name for {DESCRIPTION}.")
        heads = (
            n_head
            if hf_name.endswith(("q_proj.weight", "q_proj.bias"))
            else n_kv
            if hf_name.endswith(("k_proj.weight", "k_proj.bias"))
            else 0
        )
        src = planned_source(src)
        plans.append(
            TensorPlan(name, src, weight_type(name, src.shape, default), src.shape[0] // heads if heads else 0)
        )
    return plans


def add_parameters(
    writer: gguf.GGUFWriter, hf_dir: Path, hp: dict, ftype: gguf.LlamaFileType, options: Options
) -> None:
    """TextModel.set_gguf_parameters + LlamaModel.set_gguf_parameters, for Llama configs."""
    writer.add_block_count(hp["num_hidden_layers"])
    if (n_ctx := first(hp, *CONTEXT_KEYS)) is not None:
        writer.add_context_length(n_ctx)
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    if (n_kv := hp.get("num_key_value_heads")) is not None:
        writer.add_head_count_kv(n_kv)
    rope = dict(hp.get("rope_parameters") or hp.get("rope_scaling") or {})
    if "rope_theta" not in rope and (theta := first(hp, "rope_theta", "rotary_emb_base")) is not None:
        rope["rope_theta"] = theta
    add_rope_scaling(writer, rope)
    if (theta := rope.get("rope_theta")) is not None:
        writer.add_rope_freq_base(theta)
    if (eps := first(hp, "rms_norm_eps", "norm_eps")) is not None:
        writer.add_layer_norm_rms_eps(eps)
    if (head_dim := hp.get("head_dim")) is not None:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_file_type(ftype)
    writer.add_vocab_size(hp["vocab_size"])
    writer.add_rope_dimension_count(head_dim or hp["hidden_size"] // hp["num_attention_heads"])


def add_rope_scaling(writer: gguf.GGUFWriter, rope: dict) -> None:
    kind = rope.get("rope_type", rope.get("type"))
    if kind in (None, "default", "dynamic"):  # dynamic NTK is a runtime choice in llama.cpp
        return
    if kind == "linear" and rope.get("factor") is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
        return
    raise ConversionError(f"RoPE scaling {kind!r} is not supported; supported: none or linear.")
