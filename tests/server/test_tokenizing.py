"""Tokenizing is linear in the text, and gives exactly llama.cpp's ids for the whole text.

/tokenize of 50,000 "<|im_start|>" took about 21 s: llama.cpp's tokenizer counts its way
along its list of fragments for every special-token match (k markers: ~k²/2 steps; the
reason llama-server takes 11 s), and llama-cpp-python called it twice once the ids
outnumbered the training context. server/engine/tokens/tokenizing.py tokenizes long texts in
segments cut where cutting changes nothing, one call each. Linearity is checked by what
each llama_tokenize call is given (never timed): a bounded number of bytes per call, so
a text four times as long costs four times the calls.
"""

from __future__ import annotations

import llama_cpp.llama_cpp as lc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_cpp import _internals

from server.engine.tokens import tokenizing
from server.engine.tokens.tokenizing import SEARCH_BYTES, SEGMENT_BYTES, SpecialTexts, tokenize, tokenize_whole


class Vocab:
    def __init__(self, gguf) -> None:
        params = lc.llama_model_default_params()
        params.vocab_only = True
        self.model = _internals.LlamaModel(path_model=str(gguf), params=params, verbose=False)
        self.vocab = self.model.vocab
        self.specials = SpecialTexts(self.vocab)


@pytest.fixture(scope="module")
def vocabs(smollm2_gguf, gemma_gguf, tiny_llama_gguf):
    """BPE (SmolLM2), SentencePiece without (Gemma) and with a space before each text (Llama-style)."""
    loaded = {"smollm2": Vocab(smollm2_gguf), "gemma": Vocab(gemma_gguf), "llama": Vocab(tiny_llama_gguf)}
    yield loaded
    for v in loaded.values():
        v.model.close()


class Calls:
    """Every llama_tokenize call's text length, counted through the real function while in use."""

    def __enter__(self) -> "Calls":
        self.sizes: list[int] = []
        self.real = real = lc.llama_tokenize

        def counting(vocab, text, n_text, *rest):
            self.sizes.append(n_text)
            return real(vocab, text, n_text, *rest)

        lc.llama_tokenize = counting
        return self

    def __exit__(self, *_) -> None:
        lc.llama_tokenize = self.real


def test_fifty_thousand_markers_cost_calls_of_bounded_size(vocabs):
    v = vocabs["smollm2"]
    im_start = tokenize_whole(v.vocab, b"<|im_start|>", False, True)
    assert len(im_start) == 1
    costs = {}
    for n in (10_000, 40_000):
        with Calls() as calls:
            ids = tokenize(v.vocab, b"<|im_start|>" * n, False, True, v.specials)
        assert ids == im_start * n
        bound = SEGMENT_BYTES + SEARCH_BYTES + v.specials.longest
        assert max(calls.sizes) <= bound and sum(calls.sizes) == 12 * n  # each byte once, no second call
        costs[n] = len(calls.sizes)
    assert costs[40_000] <= 4 * costs[10_000] + 1


def test_segments_give_the_ids_of_the_whole_text(vocabs):
    v = vocabs["smollm2"]
    text = ("Hello <|im_start|>user\n  spaced <|im_end|>\n" * 400).encode()
    assert tokenize(v.vocab, text, True, True, v.specials) == tokenize_whole(v.vocab, text, True, True)
    assert tokenize(v.vocab, text, False, False, v.specials) == tokenize_whole(v.vocab, text, False, False)


def test_tokenize_endpoint_with_fifty_thousand_markers(client):
    with Calls() as calls:
        r = client.post("/tokenize", json={"content": "<start_of_turn>" * 50_000})
    assert r.status_code == 200
    assert r.get_json()["tokens"] == [105] * 50_000  # Gemma's <start_of_turn>
    assert max(calls.sizes) <= SEGMENT_BYTES + SEARCH_BYTES + 64 and sum(calls.sizes) == 15 * 50_000


def _pieces(specials: SpecialTexts) -> list[bytes]:
    """Special texts (some of each kind), their halves, whitespace and letters: what cuts must respect."""
    chosen = sorted(specials.plain)[:12] + sorted(specials.parsed - specials.plain)[:24]
    chosen += [b"<|im_start|>", b"<start_of_turn>", b"<end_of_turn>"]
    halves = [s[: len(s) // 2] for s in chosen] + [s[len(s) // 2 :] for s in chosen]
    return chosen + halves + [b" ", b"  ", b"\n", b"\t", b"a", b"Hi", "é".encode(), b"<", b">", b"|"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(["smollm2", "gemma", "llama"]), add=st.booleans(), parse=st.booleans())
def test_any_text_in_segments_gives_the_ids_of_the_whole(vocabs, data, name, add, parse):
    """With tiny segments, so that texts of a few dozen pieces are cut in many places."""
    v = vocabs[name]
    text = b"".join(data.draw(st.lists(st.sampled_from(_pieces(v.specials)), max_size=60)))
    original = tokenizing.SEGMENT_BYTES, tokenizing.SEARCH_BYTES, tokenizing.LONG
    tokenizing.SEGMENT_BYTES, tokenizing.SEARCH_BYTES, tokenizing.LONG = 8, 8, 16
    try:
        assert tokenize(v.vocab, text, add, parse, v.specials) == tokenize_whole(v.vocab, text, add, parse)
    finally:
        tokenizing.SEGMENT_BYTES, tokenizing.SEARCH_BYTES, tokenizing.LONG = original


def _markers(specials: SpecialTexts) -> list[bytes]:
    """Special texts like "<|im_start|>": a run of them (with or without letters between) can be cut."""
    assert not any(b"><" in t for t in specials.every)  # so no special text spans two of them
    return [t for t in sorted(specials.parsed) if t[:1] == b"<" and t[-1:] == b">" and t.count(b"<") == 1][:60]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(["smollm2", "gemma", "llama"]), n=st.integers(1_000, 30_000))
def test_no_text_gives_one_call_an_unbounded_share(vocabs, data, name, n):
    """Before: one call had the whole text, however many markers it held (quadratic in them)."""
    v = vocabs[name]
    marker = data.draw(st.sampled_from(_markers(v.specials)))
    filler = data.draw(st.sampled_from([b"", b"a", b"Hi ", b"\n", b" "]))
    with Calls() as calls:
        tokenize(v.vocab, (marker + filler) * n, False, True, v.specials)
    assert max(calls.sizes) <= SEGMENT_BYTES + SEARCH_BYTES + v.specials.longest + len(filler)
