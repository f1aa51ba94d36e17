"""A node without 'type' has the type its keywords imply, in the grammar as in the check.

The check reads {"minimum": 1} as a number and {"required": []} as an object (keywords of one
type imply it), but the converter knew no type from them: "Unrecognized schema", a 400 for a
schema the check had accepted. Every schema the check accepts must convert.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.constraints.grammar import check_grammar
from server.model.schema_check import SchemaError, check_schema
from server.model.schema_grammar import schema_to_gbnf
from tests.server.grammar_oracle import Oracle


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


@pytest.mark.parametrize(
    "schema, inside, outside",
    [
        ({"minimum": 1}, [1, 2.5], [0, "1"]),
        ({"exclusiveMinimum": 0, "maximum": 3}, [0.5, 3], [0, 4]),
        ({"required": []}, [{}, {"a": 1}], [[]]),
        ({"minLength": 2}, ["ab"], ["a", 12]),
        ({"items": {"type": "integer"}, "maxItems": 1}, [[], [1]], [[1, 2], {}]),
    ],
)
def test_the_implied_type_is_enforced(oracle, schema, inside, outside):
    text = schema_to_gbnf(schema)
    assert all(oracle.accepts(text, json.dumps(v)) for v in inside)
    assert not any(oracle.accepts(text, json.dumps(v)) for v in outside)


KEYWORDS = {
    "number": st.fixed_dictionaries(
        {}, optional={"minimum": st.integers(-5, 5), "maximum": st.integers(5, 9), "exclusiveMinimum": st.just(-6)}
    ),
    "string": st.fixed_dictionaries({}, optional={"minLength": st.integers(0, 3), "maxLength": st.integers(3, 9)}),
    "array": st.fixed_dictionaries(
        {"items": st.just({"type": "integer"})}, optional={"minItems": st.integers(0, 2), "maxItems": st.integers(2, 5)}
    ),
    "object": st.fixed_dictionaries(
        {}, optional={"properties": st.just({"a": {"type": "integer"}}), "required": st.just([])}
    ),
}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=st.one_of(*KEYWORDS.values()), nulls=st.booleans())
def test_every_schema_the_check_accepts_converts(oracle, schema, nulls):
    if nulls:  # a keyword sent as null counts as not sent
        schema = {**schema, **{k: None for k in ("minLength", "minItems") if k not in schema and schema}}
    try:
        check_schema(schema)
    except SchemaError:
        return
    check_grammar(oracle.vocab, schema_to_gbnf(schema))
