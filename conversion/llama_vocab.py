"""The Llama SentencePiece vocabulary, written exactly as llama.cpp's converter writes it.

Token texts, scores and types come from tokenizer.model; added tokens from
added_tokens.json and tokenizer_config.json override them; special ids,
add_bos/add_eos and the chat template come from gguf.SpecialVocab, the same
class llama.cpp's converter uses.
"""

from __future__ import annotations

import json
from enum import IntEnum
from pathlib import Path

import gguf

from conversion.errors import ConversionError

CODE_LLAMA_VOCAB = 32016  # Code Llama's infill tokens sit at fixed ids
CODE_LLAMA_INFILL = {"prefix": 32007, "suffix": 32008, "middle": 32009, "eot": 32010}


class TokenType(IntEnum):
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


def looks_special(text: str) -> bool:
    # Some added tokens that act as control tokens are not flagged special.
    return (
        text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
        or (text.startswith("<|") and text.endswith("|>"))
        or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
        or (text.startswith("<unused") and text.endswith(">"))
    )


def piece_type(sp, token_id: int) -> TokenType:
    checks = (
        (sp.IsUnknown, TokenType.UNKNOWN),
        (sp.IsControl, TokenType.CONTROL),
        (sp.IsUnused, TokenType.UNUSED),
        (sp.IsByte, TokenType.BYTE),
    )
    for check, kind in checks:
        if check(token_id):
            return kind
    return TokenType.NORMAL


def sentencepiece_vocab(hf_dir: Path, vocab_size: int | None):
    """(tokens, scores, types) padded or cut to the config's vocab_size."""
    from sentencepiece import SentencePieceProcessor

    path = hf_dir / "tokenizer.model"
    if not path.is_file():
        raise ConversionError(
            f"tokenizer.model is missing from {hf_dir}. Supported: Llama 1/2, Code Llama and "
            "TinyLlama-style checkpoints with a SentencePiece tokenizer.model (Llama 3's "
            "tokenizer.json alone is not supported)."
        )
    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(path))
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores = [-10000.0] * n
    types = [TokenType.UNUSED] * n
    for i in range(min(n, sp.vocab_size())):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = piece_type(sp, i)
    apply_added_tokens(hf_dir, tokens, scores, types)
    return tokens, scores, types


def apply_added_tokens(hf_dir: Path, tokens: list, scores: list, types: list) -> None:
    n = len(tokens)
    added = hf_dir / "added_tokens.json"
    if added.is_file():
        for text, token_id in json.loads(added.read_text(encoding="utf-8")).items():
            if token_id < n:
                tokens[token_id], scores[token_id] = text.encode("utf-8"), -1000.0
                types[token_id] = TokenType.USER_DEFINED
    config = hf_dir / "tokenizer_config.json"
    if not config.is_file():
        return
    decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
    for key, data in decoder.items():
        token_id, text = int(key), data["content"]
        if token_id >= n:
            continue
        if data.get("special") or looks_special(text):
            types[token_id] = TokenType.CONTROL
        else:
            text = text.replace("\u2581", " ")  # user-defined pieces use real spaces
            types[token_id] = TokenType.USER_DEFINED
        scores[token_id], tokens[token_id] = -1000.0, text.encode("utf-8")


def add_vocab(writer: gguf.GGUFWriter, hf_dir: Path, hparams: dict) -> None:
    """Write tokenizer.* keys in the order llama.cpp's LlamaModel.set_vocab does."""
    config = hf_dir / "tokenizer_config.json"
    if config.is_file():
        prefix = json.loads(config.read_text(encoding="utf-8")).get("add_prefix_space")
        if prefix is not None:
            writer.add_add_space_prefix(prefix)
    tokens, scores, types = sentencepiece_vocab(hf_dir, hparams.get("vocab_size"))
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    gguf.SpecialVocab(hf_dir, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    if hparams.get("vocab_size") == CODE_LLAMA_VOCAB:
        infill = gguf.SpecialVocab(hf_dir, load_merges=False, special_token_types=list(CODE_LLAMA_INFILL))
        for kind, token_id in CODE_LLAMA_INFILL.items():
            infill._set_special_token(kind, token_id)
        infill.add_to_gguf(writer, quiet=True)
