"""A tiny BERT reranker (BertForSequenceClassification, one label) in Hugging Face layout, for the tests.

Random but well-scaled numpy weights from a fixed seed (the same bytes on every machine, so
the reference converter's output can be pinned by its sha256), written as one safetensors
file with the config.json, vocab.txt, tokenizer_config.json and special_tokens_map.json of
an old-style BERT checkpoint (no tokenizer.json: the vocab.txt path of the converter).
The vocabulary is all-MiniLM-L6-v2's (bert-base-uncased's), so that llama.cpp's converter
knows its pre-tokenizer. Also a safetensors reader for the numpy oracle, which must not
share code with conversion/.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.tiny_llama import write_json, write_safetensors

RERANKER_FOLDER = "tiny-bert-reranker"  # the folder name becomes the GGUF's general.name
SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


@dataclass(frozen=True)
class TinyBertSpec:
    hidden_size: int = 64  # a multiple of 32, so Q8_0 really quantizes every matrix
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 512
    seed: int = 21


def bert_config(spec: TinyBertSpec, vocab_size: int) -> dict:
    return {
        "architectures": ["BertForSequenceClassification"],
        "model_type": "bert",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "max_position_embeddings": spec.max_position_embeddings,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "torch_dtype": "float32",
    }


def random_weights(config: dict, seed: int) -> dict[str, np.ndarray]:
    """float32 weights named as transformers' BertForSequenceClassification names them."""
    rng = np.random.default_rng(seed)
    d, ff = config["hidden_size"], config["intermediate_size"]

    def mat(rows, cols, std):
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def vec(n, mean=0.0, std=0.05):  # norms not all ones and biases not zero, so each one shows
        return (mean + std * rng.standard_normal(n)).astype(np.float32)

    e = "bert.embeddings."
    w = {
        e + "word_embeddings.weight": mat(config["vocab_size"], d, 0.5),
        e + "position_embeddings.weight": mat(config["max_position_embeddings"], d, 0.2),
        e + "token_type_embeddings.weight": mat(2, d, 0.5),  # rows differ: segment B is not segment A
        e + "LayerNorm.weight": vec(d, 1.0, 0.1),
        e + "LayerNorm.bias": vec(d),
    }
    for i in range(config["num_hidden_layers"]):
        p = f"bert.encoder.layer.{i}."
        for part in ("query", "key", "value"):
            w[p + f"attention.self.{part}.weight"] = mat(d, d, 0.15)
            w[p + f"attention.self.{part}.bias"] = vec(d)
        w[p + "attention.output.dense.weight"] = mat(d, d, 0.1)
        w[p + "attention.output.dense.bias"] = vec(d)
        w[p + "attention.output.LayerNorm.weight"] = vec(d, 1.0, 0.1)
        w[p + "attention.output.LayerNorm.bias"] = vec(d)
        w[p + "intermediate.dense.weight"] = mat(ff, d, 0.15)
        w[p + "intermediate.dense.bias"] = vec(ff)
        w[p + "output.dense.weight"] = mat(d, ff, 0.1)
        w[p + "output.dense.bias"] = vec(d)
        w[p + "output.LayerNorm.weight"] = vec(d, 1.0, 0.1)
        w[p + "output.LayerNorm.bias"] = vec(d)
    w["bert.pooler.dense.weight"] = mat(d, d, 0.15)
    w["bert.pooler.dense.bias"] = vec(d)
    w["classifier.weight"] = mat(1, d, 0.5)
    w["classifier.bias"] = vec(1, 0.1)
    return w


def wordpiece_vocab(tokenizer_json: Path) -> list[str]:
    """The tokens of a tokenizer.json's WordPiece vocabulary, in id order."""
    vocab = json.loads(tokenizer_json.read_text(encoding="utf-8"))["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    return tokens


def write_tiny_reranker(out: Path, vocab_from: Path, spec: TinyBertSpec | None = None) -> Path:
    """Write the reranker into `out`, with the vocabulary of the checkpoint folder `vocab_from`."""
    spec = spec or TinyBertSpec()
    out.mkdir(parents=True, exist_ok=True)
    tokens = wordpiece_vocab(vocab_from / "tokenizer.json")
    (out / "vocab.txt").write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    config = bert_config(spec, len(tokens))
    write_json(out / "config.json", config)
    write_json(
        out / "tokenizer_config.json",
        {
            "do_lower_case": True,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": 512,
            "tokenizer_class": "BertTokenizer",
        },
    )
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]"}
    write_json(out / "special_tokens_map.json", {**specials, "mask_token": "[MASK]"})
    write_safetensors(out / "model.safetensors", random_weights(config, spec.seed), "F32")
    return out


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every float tensor of one safetensors file as float32 (integer buffers are left out)."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] == "I64":
            continue
        a, b = meta["data_offsets"]
        dtype = np.dtype(SAFETENSORS_DTYPES[meta["dtype"]]).newbyteorder("<")
        data = np.frombuffer(blob[8 + n + a : 8 + n + b], dtype=dtype)
        tensors[name] = data.astype(np.float32).reshape(meta["shape"])
    return tensors
