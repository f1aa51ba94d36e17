"""Converted BERT models compute what the Hugging Face checkpoint computes, in llama.cpp itself.

The reference is tests/conversion/bert_oracle.py, a float64 numpy BERT on the checkpoint's own
weights. llama.cpp runs our GGUF with embeddings on and the GGUF's pooling type (mean for
all-MiniLM-L6-v2), one sequence per decode, read with llama_get_embeddings_seq.

Tokenization: the `tokenizers` package is not installed in this environment, so each text is
tokenized once with llama.cpp (from the GGUF's vocabulary, [CLS] ... [SEP]) and the same ids
go to both sides; a text longer than the model's 512 positions is cut to 511 tokens plus its
[SEP]. What is compared is therefore the model; test_bert_tokens.py holds llama.cpp's ids to
transformers' (pinned), which agree on every text here but the Korean one and the one that spells
special tokens.
"""

from __future__ import annotations

import json

import llama_cpp
import numpy as np
import pytest

from tests.conversion.bert_oracle import sentence_embedding
from tests.conversion.llama_bert import N_CTX, cosine, llama_outputs, tokenize
from tests.tiny_bert import read_safetensors

LONG = " ".join(f"Sentence {i} of a long document about embeddings, retrieval and reranking." for i in range(80))
TEXTS = [
    "",
    " ",
    ".",
    "a",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "How do I bake sourdough bread at home?",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "A man is playing a guitar on the street corner while people walk past.",
    "Python's list comprehensions are concise: [x * x for x in range(10) if x % 2 == 0]",
    "def add(a: int, b: int) -> int:\n    return a + b  # sum\n",
    "SELECT name, COUNT(*) FROM users WHERE age > 30 GROUP BY name;",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    "Bonjour, comment allez-vous aujourd'hui ? Très bien, merci.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca? Está al lado del café.",
    "Привет, как дела? Сегодня хорошая погода.",
    "Καλημέρα σας, τι κάνετε σήμερα;",
    "我想在北京大学学习计算机科学。",
    "東京は日本の首都です。ラーメンが大好きです。",
    "안녕하세요, 만나서 반갑습니다.",
    "مرحبا بكم في عالم الذكاء الاصطناعي",
    "नमस्ते, आप कैसे हैं?",
    "สวัสดีครับ ยินดีที่ได้รู้จัก",
    "I love pizza 🍕🍕 and tacos 🌮! 😀😃😄",
    "🚀🚀🚀 to the moon 🌕 👨‍👩‍👧‍👦",
    "Ça coûte 5 € — naïve café façade, jalapeño piñata.",
    "URL: https://example.com/path?query=1&other=two#frag",
    "   leading and trailing spaces   \t\n",
    "ALL CAPS SHOUTING TEXT",
    "1234567890 3.14159 2.71828 -42 1e-10",
    "[CLS] [SEP] [MASK] look like special tokens but are text here",
    LONG,
]


@pytest.fixture(scope="module")
def minilm_oracle(minilm_checkpoint, converted):
    """The ids of every text and the oracle's vectors for them (computed once)."""
    config = json.loads((minilm_checkpoint / "config.json").read_text())
    weights = read_safetensors(minilm_checkpoint / "model.safetensors")
    seqs = tokenize(converted(minilm_checkpoint, "f16"), TEXTS, wrap=True)
    return seqs, [sentence_embedding(weights, config, ids) for ids in seqs]


def test_minilm_tokens_are_bert_shaped(minilm_oracle):
    seqs, _ = minilm_oracle
    assert all(ids[0] == 101 and ids[-1] == 102 for ids in seqs)  # [CLS] ... [SEP]
    assert seqs[0] == [101, 102] and len(seqs[-1]) == N_CTX  # empty; the long one cut to 512
    assert 100 not in seqs[TEXTS.index("Hello, world!")]  # no [UNK] in plain English


# Q8_0: llama.cpp's CPU kernels quantize activations to 8 bits as well as the weights. Seen here:
# the f16 GGUF agrees to >= 0.999997 on every text; Q8_0 weights alone (dequantized, run in f32)
# to >= 0.99945; the real Q8_0 file to a median of 0.9996 and >= 0.999 on every text of five
# tokens or more, but 0.9982-0.9988 on the 2-4 token inputs ("", " ", ".", Thai as [UNK]s), where
# a mean over so few tokens averages nothing out. So short inputs get their own floor.
FLOORS = {"f16": (0.9999, 0.9999), "Q8_0": (0.999, 0.998)}  # (5+ tokens, shorter)


@pytest.mark.parametrize("quant", list(FLOORS))
def test_minilm_embeddings_match_the_oracle(tmp_path, minilm_checkpoint, converted, minilm_oracle, quant):
    from conversion.quantizer import quantize

    gguf_path = converted(minilm_checkpoint, "f16")
    if quant != "f16":
        gguf_path = quantize(gguf_path, tmp_path / f"minilm.{quant}.gguf", quant, threads=2, progress=False)
    seqs, expected = minilm_oracle
    got = llama_outputs(gguf_path, seqs, llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED)  # the GGUF's: mean
    cosines = [cosine(g, e) for g, e in zip(got, expected, strict=True)]
    print(f"{quant}: min cosine {min(cosines):.7f}, median {np.median(cosines):.7f} over {len(cosines)} texts")
    floors = [FLOORS[quant][0 if len(ids) >= 5 else 1] for ids in seqs]
    low = [(TEXTS[i][:40], c, f) for i, (c, f) in enumerate(zip(cosines, floors, strict=True)) if c < f]
    assert not low
    assert np.median(cosines) >= FLOORS[quant][0] + (1 - FLOORS[quant][0]) / 2
    # the vectors are far apart across texts: agreeing means something
    assert cosine(expected[5], expected[19]) < 0.5


def test_minilm_pooling_is_mean_as_its_sentence_transformers_config_says(minilm_checkpoint, converted, minilm_oracle):
    """Against llama.cpp with CLS pooling forced, the mean-pooled oracle disagrees: the pooling matters."""
    seqs, expected = minilm_oracle
    got = llama_outputs(converted(minilm_checkpoint, "f16"), seqs[4:8], llama_cpp.LLAMA_POOLING_TYPE_CLS)
    assert max(cosine(g, e) for g, e in zip(got, expected[4:8], strict=True)) < 0.99
