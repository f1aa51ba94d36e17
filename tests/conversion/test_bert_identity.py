"""BERT conversions are byte-identical to llama.cpp's convert_hf_to_gguf.py, without torch here.

bert_reference.json holds the sha256 and size of what llama.cpp's converter (at the version
the pinned llama-cpp-python vendors) wrote for each case; bert_reference.py regenerates it.
Our converter's output must hash the same. When it does not and the reference GGUF is on
disk (bench/.work/bert-reference/, left there by bert_reference.py), the failure names the
first metadata key or tensor that differs, read from both files with gguf's reader.
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest

from tests.conversion.bert_reference import CASES, HASHES, KEEP, sha256_of

PINNED = json.loads(HASHES.read_text())


def first_difference(ours, ref) -> str:
    """The first KV key (in file order) or tensor whose name, type, shape or bytes differ."""
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(ref)
    # the header's own fields (GGUF.kv_count, ...) only echo a difference further on
    keys_a, keys_b = ([k for k in r.fields if not k.startswith("GGUF.")] for r in (a, b))
    for i, (ka, kb) in enumerate(zip(keys_a, keys_b, strict=False)):
        if ka != kb:
            return f"metadata key #{i}: ours {ka!r}, llama.cpp's {kb!r}"
        fa, fb = a.fields[ka], b.fields[kb]
        if fa.types != fb.types or fa.contents() != fb.contents():
            return f"metadata {ka!r}: ours {str(fa.contents())[:200]}, llama.cpp's {str(fb.contents())[:200]}"
    if len(keys_a) != len(keys_b):
        who, longer = ("ours", keys_a) if len(keys_a) > len(keys_b) else ("llama.cpp", keys_b)
        return f"metadata: only {who} has {longer[min(len(keys_a), len(keys_b))]!r}"
    for i, (ta, tb) in enumerate(zip(a.tensors, b.tensors, strict=False)):
        for what in ("name", "tensor_type"):
            if getattr(ta, what) != getattr(tb, what):
                return f"tensor #{i} {what}: ours {getattr(ta, what)}, llama.cpp's {getattr(tb, what)}"
        if list(ta.shape) != list(tb.shape) or not np.array_equal(ta.data.view(np.uint8), tb.data.view(np.uint8)):
            return f"tensor {ta.name}: shape or data differ"
    if len(a.tensors) != len(b.tensors):
        return f"ours has {len(a.tensors)} tensors, llama.cpp's {len(b.tensors)}"
    return "no difference in keys or tensors: padding or alignment differs"


@pytest.mark.parametrize("case", list(CASES))
def test_bert_conversion_is_byte_identical_to_llama_cpp(request, converted, case):
    which, outtype = CASES[case]
    checkpoint = request.getfixturevalue({"minilm": "minilm_checkpoint", "reranker": "tiny_reranker_checkpoint"}[which])
    ours = converted(checkpoint, outtype)
    expected = PINNED["cases"][case]
    got = {"sha256": sha256_of(ours), "size": ours.stat().st_size}
    if got != expected:
        ref = KEEP / f"{case}.gguf"
        where = first_difference(ours, ref) if ref.is_file() else f"(no {ref} here to compare with)"
        pytest.fail(f"{case}: ours {got}, llama.cpp's {expected}; first difference: {where}")


def test_the_reference_is_the_pinned_llama_cpp():
    """The hashes were made with the llama.cpp that requirements.txt pins; a new pin needs new hashes."""
    from tests.conversion.bert_reference import REPO

    pin = next(line for line in (REPO / "requirements.txt").read_text().splitlines() if line.startswith("llama-cpp"))
    assert pin == f"llama-cpp-python=={PINNED['reference']['llama-cpp-python']}"
