"""BERT (BertModel, BertForSequenceClassification) as llama.cpp's BertModel converter writes it.

Embedding models (sentence-transformers layout) get their pooling type from modules.json
and the Pooling module's config.json, as llama.cpp's `_try_set_pooling_type` reads them.
A sentence-transformers Normalize module is not recorded: llama.cpp's converter writes no
key for it (the vectors are normalized by whoever serves them). Rerankers
(BertForSequenceClassification) keep their classifier as cls.output; llama.cpp's converter
drops BERT's pooler, so llama.cpp then scores classifier(h_CLS) where transformers scores
classifier(tanh(pooler(h_CLS))). `keep_pooler` writes the pooler as llama.cpp's cls tensors
(and pooling type rank), which makes llama.cpp's rank head compute transformers' function
exactly, at the price of a file that is no longer byte-identical to llama.cpp's converter.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from conversion.checkpoint import index_tensors, load_json
from conversion.errors import ConversionError
from conversion.plan import OUTTYPES, Options, TensorPlan, first, planned_source, weight_type
from conversion.special_tokens import special_tokens
from conversion.wordpiece import load_wordpiece

HF_NAMES = ("BertModel", "BertForMaskedLM", "BertForSequenceClassification")
DESCRIPTION = "BertModel and BertForSequenceClassification (WordPiece vocabulary)"
REQUIRED = ("vocab_size",)
# What transformers' BertConfig fills in when config.json leaves it out.
CONFIG_DEFAULTS = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
}
# HF names dropped by llama.cpp's converter (after the "bert." prefix is removed).
DROPPED = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
DROPPED_PREFIXES = ("cls.predictions", "cls.seq_relationship")
POOLING_MODES = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS, "lasttoken": gguf.PoolingType.LAST}
POOLING_FLAGS = (
    ("pooling_mode_mean_tokens", gguf.PoolingType.MEAN),
    ("pooling_mode_cls_token", gguf.PoolingType.CLS),
    ("pooling_mode_lasttoken", gguf.PoolingType.LAST),
)


def with_config_defaults(hparams: dict) -> dict:
    """BertConfig's defaults, and the classifier labels as AutoConfig would give them."""
    hp = {**CONFIG_DEFAULTS, **hparams}
    labels = hp.get("id2label")
    if labels is None:  # PretrainedConfig makes LABEL_i names for num_labels (default 2)
        labels = {i: f"LABEL_{i}" for i in range(hp.get("num_labels", 2))}
    labels = {int(k): v for k, v in labels.items()}
    if len(labels) == 2 and labels.get(0) == "LABEL_0":  # the dummy labels llama.cpp removes
        labels = {}
    hp["_labels"] = [v for _, v in sorted(labels.items())]
    return hp


def tensor_name(hf_name: str, has_labels: bool, keep_pooler: bool) -> str | None:
    """The HF name as llama.cpp's BertModel renames it before mapping; None: dropped."""
    name = hf_name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    if keep_pooler and has_labels and name.startswith("pooler.dense."):
        return "cls." + name.rsplit(".", 1)[1]  # llama.cpp's rank head: cls -> tanh -> cls.output
    if name in DROPPED or name.startswith(DROPPED_PREFIXES):
        return None
    if has_labels and name in ("classifier.weight", "classifier.bias"):
        name = name.replace("classifier.", "classifier.out_proj.")
    return name


def plan_tensors(hf_dir: Path, hparams: dict, outtype: str, options: Options) -> list[TensorPlan]:
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, hparams["num_hidden_layers"])
    has_labels = bool(hparams["_labels"])
    default = OUTTYPES[outtype][1]
    plans = []
    for hf_name, src in index_tensors(hf_dir).items():
        name = tensor_name(hf_name, has_labels, options.keep_pooler)
        if name is None:
            continue
        gguf_name = name if name.startswith("cls.") else name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConversionError(f"Tensor {hf_name!r} has no GGUF name for {DESCRIPTION}.")
        src = planned_source(src)
        # position and token type embeddings stay F32, as llama.cpp's prepare_tensors keeps them
        keep_f32 = gguf_name in ("position_embd.weight", "token_types.weight")
        plans.append(TensorPlan(gguf_name, src, weight_type(gguf_name, src.shape, default, keep_f32)))
    return plans


def add_parameters(
    writer: gguf.GGUFWriter, hf_dir: Path, hp: dict, ftype: gguf.LlamaFileType, options: Options
) -> None:
    """TextModel.set_gguf_parameters + BertModel.set_gguf_parameters, for BERT configs."""
    writer.add_block_count(hp["num_hidden_layers"])
    writer.add_context_length(hp["max_position_embeddings"])
    writer.add_embedding_length(hp["hidden_size"])
    writer.add_feed_forward_length(hp["intermediate_size"])
    writer.add_head_count(hp["num_attention_heads"])
    if (eps := first(hp, "layer_norm_eps", "layer_norm_epsilon", "norm_epsilon")) is not None:
        writer.add_layer_norm_eps(eps)
    writer.add_file_type(ftype)
    writer.add_causal_attention(False)
    pooling = sentence_transformers_pooling(hf_dir)
    if pooling is None and options.keep_pooler and hp["_labels"]:
        pooling = gguf.PoolingType.RANK
    if pooling is not None:
        writer.add_pooling_type(pooling)
    if hp["_labels"]:
        writer.add_classifier_output_labels(hp["_labels"])


def sentence_transformers_pooling(hf_dir: Path) -> gguf.PoolingType | None:
    """The Pooling module's mode (modules.json -> <path>/config.json), or None without modules.json."""
    modules_path = hf_dir / "modules.json"
    if not modules_path.is_file():
        return None
    modules = load_json(modules_path)
    path = next((m["path"] for m in modules if m.get("type", "").endswith("Pooling")), None)
    if path is None:
        return None
    config = load_json(hf_dir / path / "config.json")
    for flag, kind in POOLING_FLAGS:
        if config.get(flag):
            return kind
    if config.get("pooling_mode") in POOLING_MODES:
        return POOLING_MODES[config["pooling_mode"]]
    raise ConversionError(f"{hf_dir / path / 'config.json'}: only mean, CLS and last-token pooling are supported.")


def add_vocab(writer: gguf.GGUFWriter, hf_dir: Path, hp: dict) -> None:
    """BertModel.set_vocab: WordPiece tokens in llama.cpp's phantom-space form, types, special tokens."""
    wordpiece = load_wordpiece(hf_dir)
    vocab_size = hp["vocab_size"]
    if max(wordpiece.vocab.values()) >= vocab_size:
        raise ConversionError(f"The tokenizer of {hf_dir} has ids beyond config.json's vocab_size {vocab_size}.")
    pre = wordpiece.pre_name()
    tokens, types = token_list(hf_dir, wordpiece.vocab, vocab_size)
    writer.add_token_type_count(hp["type_vocab_size"])
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special_tokens(hf_dir, len(tokens)).add_to_gguf(writer)


def token_list(hf_dir: Path, vocab: dict[str, int], vocab_size: int) -> tuple[list[str], list[int]]:
    """get_vocab_base + BertModel's phantom space: '##x' -> 'x', other words -> '▁word', control as is."""
    control, user_defined = added_token_ids(hf_dir, vocab)
    by_id = {i: text for text, i in vocab.items()}
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in control:
            tokens.append(text)
            types.append(gguf.TokenType.CONTROL)
        else:
            if i in user_defined:
                text = text.replace("\u2581", " ")  # llama.cpp pre-normalizes user-defined spaces
            tokens.append(text[2:] if text.startswith("##") else "\u2581" + text)
            types.append(gguf.TokenType.USER_DEFINED if i in user_defined else gguf.TokenType.NORMAL)
    return tokens, types


def added_token_ids(hf_dir: Path, vocab: dict[str, int]) -> tuple[set[int], set[int]]:
    """(control, user-defined) ids of the added tokens: special ones are control (get_vocab_base's rule).

    tokenizer.json lists them; a vocab.txt tokenizer has BERT's five special tokens.
    """
    path = hf_dir / "tokenizer.json"
    if path.is_file():
        added = [(a["id"], a["content"], a.get("special", False)) for a in load_json(path).get("added_tokens") or []]
    else:
        config_path = hf_dir / "tokenizer_config.json"
        config = load_json(config_path) if config_path.is_file() else {}
        names = [config.get(f"{k}_token", f"[{k.upper()}]") for k in ("unk", "sep", "pad", "cls", "mask")]
        added = [(vocab[n], n, True) for n in names if n in vocab]
    control = {i for i, text, special in added if special or looks_special(text)}
    return control, {i for i, _, _ in added} - control


def looks_special(text: str) -> bool:
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )
