"""Drafts under a grammar (server/engine/constraints/guide.py), on SmolLM2's real vocabulary and
llama.cpp's grammar: a draft is cut before the first token the grammar refuses, extended by the
text the grammar forces (a JSON Schema's next key), and the sequence's own grammar is untouched."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.engine.batching import BatchDecoder, SamplingParams
from server.engine.constraints.guide import guide
from server.model.schema_grammar import schema_to_gbnf

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "email": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "email", "age"],
    "additionalProperties": False,
}
PIECES = [b'{"', b"name", b'":', b' "', b"Ann", b'",', b"email", b"age", b" 5", b"}", b'"}', b"\n", b" ", b"x"]


@pytest.fixture(scope="module")
def decoder(smollm2_gguf):
    decoder = BatchDecoder.load(smollm2_gguf, n_parallel=1, n_ctx_per_seq=256)
    yield decoder
    decoder.close()


@pytest.fixture
def sampler(decoder):
    sampler = decoder._constrained(SamplingParams(grammar=schema_to_gbnf(SCHEMA)))
    yield sampler
    sampler.free()


def tokens(decoder, text: bytes) -> list[int]:
    return decoder._tokenize_bytes(text)


def guided(decoder, sampler, draft: bytes, n_max: int = 16) -> bytes:
    ids = guide(sampler, tokens(decoder, draft), n_max, decoder._tokenize_bytes)
    return b"".join(decoder._pieces(t) or b"" for t in ids)


def test_the_next_key_is_drafted_where_the_grammar_forces_it(decoder, sampler):
    for token in tokens(decoder, b'{"'):
        sampler.accept(token)
    assert guided(decoder, sampler, b"") == b"name"  # `name"`, less its last token: `":` may follow
    # A draft that runs on into the next key is cut where it names the wrong one, then given the right one.
    assert guided(decoder, sampler, b'name": "Ann", "age') == b'name": "Ann", "email'


def test_a_draft_is_cut_before_the_first_token_the_grammar_refuses(decoder, sampler):
    for token in tokens(decoder, b'{"name": "'):
        sampler.accept(token)
    assert guided(decoder, sampler, b'Ann"}') == b"Ann"  # the object cannot end before "email"
    assert guided(decoder, sampler, b"Ann and Bob", n_max=2) == b"Ann and"  # at most n_max tokens


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=8), st.lists(st.sampled_from(PIECES), max_size=8))
def test_a_guided_draft_is_one_the_grammar_takes_whole_and_its_own_grammar_is_untouched(decoder, before, draft):
    sampler = decoder._constrained(SamplingParams(grammar=schema_to_gbnf(SCHEMA)))
    try:
        for token in tokens(decoder, b"".join(before)):  # somewhere into the answer
            if not sampler.grammar.allows(token):
                break
            sampler.accept(token)
        ids = tokens(decoder, b"".join(draft))
        out = guide(sampler, ids, 6, decoder._tokenize_bytes)
        assert out == guide(sampler, ids, 6, decoder._tokenize_bytes)  # it tried them on a copy
        assert len(out) <= 6
        prefix = 0  # the draft's tokens kept as they were
        while prefix < min(len(out), len(ids)) and out[prefix] == ids[prefix]:
            prefix += 1
        for i, token in enumerate(out):  # the grammar takes every guided token, in order
            if i == prefix and prefix < min(len(ids), 6):  # where the draft was left: it was refused there
                assert not sampler.grammar.allows(ids[prefix])
            assert sampler.grammar.allows(token)
            sampler.accept(token)
        if len(out) == prefix < min(len(ids), 6):
            assert not sampler.grammar.allows(ids[prefix])
    finally:
        sampler.free()
