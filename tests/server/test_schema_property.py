"""Property: a schema's grammar accepts a JSON text exactly when jsonschema says the value is valid.

Hypothesis draws schemas from the keywords we enforce (bounded numbers, string lengths,
enums, type lists, objects, arrays, anyOf) and values shaped like them, some valid,
some not. A value is written the way the grammar writes JSON (keys in the schema's
order, required ones first; bounded numbers without exponent), and llama.cpp's own
grammar sampler judges the text (tests/server/grammar_oracle.py).
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.model.schema_grammar import SchemaError, schema_to_gbnf
from tests.server.grammar_oracle import Oracle

NAMES = st.sampled_from(["a", "b", "c"])
SMALL_INT = st.integers(-60, 60)
DECIMAL = st.builds(lambda n, d: n + d / 100, st.integers(-60, 60), st.integers(1, 99))  # never integral


@st.composite
def bounds(draw, integer: bool) -> dict:
    schema = {}
    value = SMALL_INT if integer else st.one_of(SMALL_INT, DECIMAL)
    for low, high in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        key = draw(st.sampled_from([None, low, high]))
        if key:
            schema[key] = draw(value)
    return schema


def leaf() -> st.SearchStrategy:
    return st.one_of(
        st.builds(lambda b: {"type": "integer", **b}, bounds(True)),
        st.builds(lambda b: {"type": "number", **b}, bounds(False)),
        st.builds(lambda b: {"type": ["integer", "null"], **b}, bounds(True)),
        st.builds(
            lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
            st.integers(0, 3),
            st.integers(0, 3),
        ),
        st.just({"type": "boolean"}),
        st.builds(lambda v: {"enum": v}, st.lists(SMALL_INT | st.sampled_from(["x", "y"]), min_size=1, max_size=3)),
    )


def schemas() -> st.SearchStrategy:
    def extend(children):
        objects = st.builds(
            lambda props, req: {
                "type": "object",
                "properties": props,
                "required": sorted(set(req) & set(props)),
                "additionalProperties": False,
            },
            st.dictionaries(NAMES, children, min_size=1, max_size=3),
            st.lists(NAMES, max_size=3),
        )
        arrays = st.builds(
            lambda item, lo, extra: {"type": "array", "items": item, "minItems": lo, "maxItems": lo + extra},
            children,
            st.integers(0, 2),
            st.integers(0, 2),
        )
        unions = st.builds(lambda a, b: {"anyOf": [a, b]}, children, children)
        return st.one_of(objects, arrays, unions)

    return st.recursive(leaf(), extend, max_leaves=5)


def values(schema) -> st.SearchStrategy:
    """Values shaped by the schema, often valid, sometimes not (a wrong type, a number out of bounds)."""
    anything = st.one_of(SMALL_INT, DECIMAL, st.booleans(), st.none(), st.text("xyz", max_size=5))
    if "anyOf" in schema:
        return st.one_of(*(values(s) for s in schema["anyOf"]))
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), anything)
    kind = schema["type"]
    if kind == "object":
        props = schema["properties"]
        return st.fixed_dictionaries({}, optional={k: values(v) for k, v in props.items()}) | anything
    if kind == "array":
        return st.lists(values(schema["items"]), max_size=schema["maxItems"] + 1) | anything
    edges = [
        round(schema[k] + d, 2)
        for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        if k in schema
        for d in (0, 1, -1, 0.01, -0.01)
    ]
    near = st.sampled_from([int(e) if float(e).is_integer() else e for e in edges]) if edges else SMALL_INT
    shaped = {
        "integer": st.one_of(SMALL_INT, near),
        "number": st.one_of(SMALL_INT, DECIMAL, near),
        "string": st.text("xyz", max_size=7),
        "boolean": st.booleans(),
    }
    return st.one_of(shaped[kind[0] if isinstance(kind, list) else kind], anything)


def write(value, schema) -> str:
    """JSON text in the grammar's order: an object's keys as its schema lists them, required first
    (under a union, as the first alternative the value fits lists them)."""
    if isinstance(schema, dict) and "anyOf" in schema:
        fits = [s for s in schema["anyOf"] if jsonschema.Draft202012Validator(s).is_valid(value)]
        return write(value, (fits or schema["anyOf"])[0])
    if isinstance(value, dict) and isinstance(schema, dict) and "properties" in schema:
        props, required = schema["properties"], schema["required"]
        order = [k for k in props if k in required] + [k for k in props if k not in required]
        keys = [k for k in order if k in value] + [k for k in value if k not in order]
        return "{" + ", ".join(f"{json.dumps(k)}: {write(value[k], props.get(k))}" for k in keys) + "}"
    if isinstance(value, list) and isinstance(schema, dict) and "items" in schema:
        return "[" + ", ".join(write(v, schema["items"]) for v in value) + "]"
    return json.dumps(value)


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


def check(oracle, schema, value) -> None:
    try:
        gbnf = schema_to_gbnf(schema)
    except SchemaError as exc:  # only an empty numeric range is refused among these keywords
        assert "lies between the bounds" in exc.message, (schema, exc.message)
        return
    text = write(value, schema)
    valid = jsonschema.Draft202012Validator(schema).is_valid(value)
    assert oracle.accepts(gbnf, text) == valid, (schema, text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_leaf_grammar_accepts_exactly_the_valid_values(oracle, data):
    """Numbers at and around their bounds, strings around their lengths, enums, type lists."""
    schema = data.draw(leaf())
    check(oracle, schema, data.draw(values(schema)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_a_nested_grammar_accepts_exactly_the_valid_values(oracle, data):
    schema = data.draw(schemas())
    check(oracle, schema, data.draw(values(schema)))
