"""Tokenization of the converted all-MiniLM-L6-v2 against transformers' own ids (pinned, no transformers here).

minilm_hf_ids.json holds the ids transformers' tokenizer gives the oracle test's texts
(bert_reference.py made it). llama.cpp's WordPiece tokenizer on our GGUF must give the same,
except where llama.cpp is known to tokenize otherwise; conversion/wordpiece.py (which only
names the pre-tokenizer by hashing a check text) must give the same on every text too.
"""

from __future__ import annotations

import json
from pathlib import Path

from conversion.wordpiece import load_wordpiece
from tests.conversion.llama_bert import tokenize
from tests.conversion.test_bert_oracle import TEXTS

PINNED = json.loads(Path(__file__).with_name("minilm_hf_ids.json").read_text())
KOREAN = "안녕하세요, 만나서 반갑습니다."
# transformers finds special tokens written in the text; llama.cpp does only when asked to parse
# them (special=True), and wordpiece.py never does (the check text has none).
SPECIALS = "[CLS] [SEP] [MASK] look like special tokens but are text here"


def test_pinned_ids_are_for_these_texts():
    assert PINNED["texts"] == TEXTS


def test_llama_cpp_tokenizes_as_transformers(minilm_checkpoint, converted):
    gguf_path = converted(minilm_checkpoint, "f16")
    got = dict(zip(TEXTS, tokenize(gguf_path, TEXTS, wrap=True), strict=True))
    for text, expected in zip(TEXTS, PINNED["ids"], strict=True):
        if len(expected) > 512:
            expected = expected[:511] + expected[-1:]
        if text == KOREAN:
            # llama.cpp keeps Hangul syllables whole; transformers' BertNormalizer strips accents through
            # NFD, which splits them into jamo first. Korean text is embedded from other ids than
            # sentence-transformers uses.
            assert got[text] != expected and len(got[text]) < len(expected)
        elif text == SPECIALS:
            assert got[text] != expected
        else:
            assert got[text] == expected, text
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    try:
        parsed = llm.tokenize(SPECIALS.encode(), add_bos=True, special=True)
    finally:
        llm.close()
    assert parsed == PINNED["ids"][TEXTS.index(SPECIALS)]


def test_wordpiece_tokenizes_as_transformers(minilm_checkpoint):
    wordpiece = load_wordpiece(minilm_checkpoint)
    for text, expected in zip(TEXTS, PINNED["ids"], strict=True):
        if text != SPECIALS:
            assert wordpiece.encode(text) == expected, text
