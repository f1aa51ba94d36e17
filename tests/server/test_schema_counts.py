"""Lengths and item counts up to the check's limit are enforced, not refused by llama.cpp's parser.

The check accepts minLength/maxLength/minItems/maxItems up to MAX_LENGTH (1,000), but the
converter wrote one nested optional group per unit, and llama.cpp's grammar check refuses
more than 256 nested groups (server/engine/constraints/grammar.py): `"maxLength": 300` was a 400 naming
'schema' with a message about groups. They are GBNF counts now (`char{0,300}`).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.constraints.grammar import check_grammar
from server.model.schema_check import MAX_LENGTH
from server.model.schema_grammar import schema_to_gbnf
from tests.server.grammar_oracle import Oracle


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


def test_the_longest_length_and_count_the_check_allows_are_enforced(oracle):
    text = schema_to_gbnf({"type": "string", "maxLength": MAX_LENGTH})
    check_grammar(oracle.vocab, text)
    assert oracle.accepts(text, json.dumps("ab" * (MAX_LENGTH // 2)))
    assert not oracle.accepts(text, json.dumps("ab" * (MAX_LENGTH // 2) + "c"))
    items = schema_to_gbnf({"type": "array", "items": {"type": "integer"}, "maxItems": MAX_LENGTH})
    check_grammar(oracle.vocab, items)
    assert oracle.accepts(items, json.dumps([1] * MAX_LENGTH))
    assert not oracle.accepts(items, json.dumps([1] * (MAX_LENGTH + 1)))


def _boundaries(lo: int, hi: int | None) -> list[int]:
    return sorted({n for n in (0, lo - 1, lo, lo + 1, *((hi - 1, hi, hi + 1) if hi is not None else ())) if n >= 0})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["string", "array"]),
    lo=st.integers(0, 400),
    span=st.one_of(st.none(), st.integers(0, 400)),
)
def test_any_counts_are_enforced_exactly(oracle, kind, lo, span):
    hi = None if span is None else min(lo + span, MAX_LENGTH)
    low, high = ("minLength", "maxLength") if kind == "string" else ("minItems", "maxItems")
    schema: dict = {"type": kind, low: lo, **({high: hi} if hi is not None else {})}
    if kind == "array":
        schema["items"] = {"type": "integer"}
    text = schema_to_gbnf(schema)
    check_grammar(oracle.vocab, text)
    for n in _boundaries(lo, hi):
        value = "x" * n if kind == "string" else [7] * n
        inside = n >= lo and (hi is None or n <= hi)
        assert oracle.accepts(text, json.dumps(value)) == inside, (schema, n)


@pytest.mark.parametrize(
    "schema, inside, outside",
    [
        ({"minLength": 2}, ["ab", "abc"], ["a"]),  # the type implied by the keyword: was a 400
        ({"type": "string", "minLength": None, "maxLength": 2}, ["", "ab"], ["abc"]),  # null: not given
        ({"items": {"type": "integer"}, "minItems": None, "maxItems": 1}, [[], [1]], [[1, 2]]),  # was a 400
    ],
)
def test_counts_without_a_type_or_with_null_are_enforced(oracle, schema, inside, outside):
    text = schema_to_gbnf(schema)
    assert all(oracle.accepts(text, json.dumps(v)) for v in inside)
    assert not any(oracle.accepts(text, json.dumps(v)) for v in outside)
