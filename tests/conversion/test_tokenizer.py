"""The converted model tokenizes text exactly as sentencepiece does with the original tokenizer.model."""

from __future__ import annotations

import gguf
import llama_cpp
import pytest
import sentencepiece as spm

SAMPLES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "   leading spaces and    runs   of  spaces   ",
    "line one\nline two\n\n\nafter blank lines\n",
    "tabs\tinside\ttext",
    "café crème brûlée, naïve jalapeño",
    "日本語のテキストと中文",
    "emoji 😀🎉👍🏽 mixed in",
    "digits 1234567890 and 3.14159",
    "",
]


@pytest.fixture(scope="module")
def tokenizers(tiny_llama_checkpoint, tiny_llama_gguf):
    sp = spm.SentencePieceProcessor(model_file=str(tiny_llama_checkpoint / "tokenizer.model"))
    llm = llama_cpp.Llama(str(tiny_llama_gguf), vocab_only=True, verbose=False)
    yield sp, llm
    llm.close()


@pytest.mark.parametrize("text", SAMPLES, ids=range(len(SAMPLES)))
def test_tokens_equal_sentencepiece(tokenizers, text):
    sp, llm = tokenizers
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == sp.encode(text)
    assert llm.tokenize(text.encode(), add_bos=True, special=False) == [sp.bos_id()] + sp.encode(text)


def test_rare_characters_use_byte_tokens(tokenizers, tiny_llama_gguf):
    """The converted vocabulary keeps the byte fallback: llama.cpp spells a character it has no
    piece for as byte tokens (typed BYTE in the GGUF), one per UTF-8 byte, and gives them back."""
    _, llm = tokenizers
    reader = gguf.GGUFReader(tiny_llama_gguf)
    texts, types = (reader.fields[f"tokenizer.ggml.{key}"].contents() for key in ("tokens", "token_type"))
    tokens = llm.tokenize("😀".encode(), add_bos=False, special=False)
    assert [texts[t] for t in tokens] == ["▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]
    assert [types[t] for t in tokens[1:]] == [gguf.TokenType.BYTE] * 4
    assert llm.detokenize(tokens) == " 😀".encode()
