"""A converted BERT reranker scores in llama.cpp (pooling rank) as its numpy oracle says.

The tiny reranker (tests/tiny_bert.py) is a BertForSequenceClassification with one label.
llama.cpp's converter drops BERT's pooler, so on its byte-identical file llama.cpp scores
classifier(h_CLS); transformers scores classifier(tanh(pooler(h_CLS))). With keep_pooler our
converter writes the pooler as llama.cpp's cls tensors, and llama.cpp then computes the same
function as transformers. Both are checked against the oracle, each for what it computes.

GELU: llama.cpp's CPU computes the tanh approximation through an fp16 table, transformers the
erf GELU. With the oracle given llama.cpp's GELU, an f32 file agrees to ~3e-6 (the conversion
itself is exact); with transformers' GELU the scores of this model (about 1.6-2.2) differ by up
to 1.5e-3, all of it that GELU. So scores are held to 1e-3 of transformers' relative to their
size (at least 1), and to 1e-4 absolute with llama.cpp's GELU. An f16 file also rounds the
weights, and llama.cpp's f16 matmuls round activations to fp16 (seen: 6.8e-3 at a score of 2.2),
so it is held to 5e-3 relative, as f16 logits are in test_logits.py.

Token types: llama.cpp adds token type 0 to every position (src/models/bert.cpp), where
transformers gives the document's tokens type 1. The ids and the types llama.cpp uses go to
the oracle alike, so the model is compared, not the input; the gap to transformers' own pair
scoring is measured and printed. Tokenization is llama.cpp's, as in test_bert_oracle.py.
"""

from __future__ import annotations

import json

import llama_cpp
import numpy as np
import pytest

from tests.conversion.bert_oracle import gelu, gelu_llama_cpp, rerank_score
from tests.conversion.llama_bert import llama_outputs, tokenize
from tests.tiny_bert import read_safetensors

RANK = llama_cpp.LLAMA_POOLING_TYPE_RANK
QUERY = "What is a panda?"
DOCUMENTS = [
    "The giant panda is a bear species endemic to China.",
    "hi",
    "Pandas is a Python library for data analysis: import pandas as pd",
    "熊猫是中国特有的熊科动物。",
    "🐼🐼🐼",
    "A long document. " * 40,
]
CLS, SEP = 101, 102


@pytest.fixture(scope="module")
def pairs(tiny_reranker_checkpoint, converted):
    """(ids, transformers' token types) of [CLS] query [SEP] document [SEP], for each document."""
    query, *docs = tokenize(converted(tiny_reranker_checkpoint, "f32"), [QUERY, *DOCUMENTS], wrap=False)
    out = []
    for doc in docs:
        ids = [CLS, *query, SEP, *doc, SEP]
        out.append((ids, [0] * (len(query) + 2) + [1] * (len(doc) + 1)))
    return out


@pytest.fixture(scope="module")
def oracle(tiny_reranker_checkpoint):
    config = json.loads((tiny_reranker_checkpoint / "config.json").read_text())
    weights = read_safetensors(tiny_reranker_checkpoint / "model.safetensors")

    def score(ids, types=None, pooler=True, act=gelu):
        return float(rerank_score(weights, config, ids, types or [0] * len(ids), pooler, act)[0])

    return score


def scores(gguf_path, pairs) -> np.ndarray:
    return np.array([v[0] for v in llama_outputs(gguf_path, [ids for ids, _ in pairs], RANK)])


@pytest.fixture(scope="module")
def with_pooler(tiny_reranker_checkpoint, tmp_path_factory):
    from conversion.converter import convert

    out = tmp_path_factory.mktemp("reranker") / "tiny-reranker-pooler.f32.gguf"
    return convert(tiny_reranker_checkpoint, out, "f32", progress=False, keep_pooler=True)


def within(got: np.ndarray, expected: np.ndarray, tolerance: float) -> bool:
    return bool(np.all(np.abs(got - expected) <= tolerance * np.maximum(1.0, np.abs(expected))))


@pytest.mark.parametrize("outtype, tolerance", [("f32", 1e-3), ("f16", 5e-3)])
def test_llama_cpp_scores_what_its_format_holds(tiny_reranker_checkpoint, converted, pairs, oracle, outtype, tolerance):
    """The byte-identical file: the head without the pooler, as llama.cpp's converter leaves it."""
    got = scores(converted(tiny_reranker_checkpoint, outtype), pairs)
    expected = np.array([oracle(ids, pooler=False) for ids, _ in pairs])
    print(f"{outtype}: llama.cpp {np.round(got, 4)}, oracle {np.round(expected, 4)}")
    print(f"{outtype}: largest difference {np.abs(got - expected).max():.2e}")
    assert within(got, expected, tolerance)
    assert np.ptp(expected) > 0.1  # the documents score apart: agreeing means something
    with_pooler = np.array([oracle(ids) for ids, _ in pairs])
    assert np.abs(got - with_pooler).max() > 0.05  # what the missing pooler costs; the tolerance catches it


def test_the_conversion_is_exact_under_llama_cpps_gelu(tiny_reranker_checkpoint, converted, pairs, oracle):
    got = scores(converted(tiny_reranker_checkpoint, "f32"), pairs)
    expected = np.array([oracle(ids, pooler=False, act=gelu_llama_cpp) for ids, _ in pairs])
    print(f"f32 under llama.cpp's GELU: largest difference {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() <= 1e-4


def test_keep_pooler_scores_as_transformers(with_pooler, pairs, oracle):
    got = scores(with_pooler, pairs)
    expected = np.array([oracle(ids) for ids, _ in pairs])
    print(f"keep_pooler: llama.cpp {np.round(got, 4)}, oracle {np.round(expected, 4)}")
    print(f"keep_pooler: largest difference {np.abs(got - expected).max():.2e}")
    assert within(got, expected, 1e-3)
    assert np.abs(got - np.array([oracle(ids, act=gelu_llama_cpp) for ids, _ in pairs])).max() <= 1e-4
    transformers = np.array([oracle(ids, types) for ids, types in pairs])
    print(f"transformers, the document as token type 1: {np.round(transformers, 4)}")


def test_keep_pooler_records_rank_pooling(with_pooler):
    import gguf

    reader = gguf.GGUFReader(with_pooler)
    assert reader.fields["bert.pooling_type"].contents() == gguf.PoolingType.RANK
    assert {"cls.weight", "cls.bias", "cls.output.weight", "cls.output.bias"} <= {t.name for t in reader.tensors}
    assert reader.fields["bert.classifier.output_labels"].contents() == ["LABEL_0"]
