"""User-given schemas walked to a bounded depth: a chain of 5,000 references is a 400 naming the limit.

The body's nesting is capped before parsing (server/http/body.py), but a chain of references
($defs.d0 -> d1 -> ...) is flat in the body and was as deep as the user liked: the schema
check recursed once per reference and a 5,000-long chain was a RecursionError, a 500. Every
walk now stops at MAX_SCHEMA_DEPTH (the check) or MAX_VISIT_DEPTH (the conversion), and the
tests run each walk with a stack budget well inside Python's limit, so a walk that only
happens to fit cannot pass either.
"""

from __future__ import annotations

import contextlib
import random
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.request import Tool, ToolChoice
from server.model.schema_check import MAX_OPTIONAL_PROPERTIES, MAX_SCHEMA_DEPTH, SchemaError, check_schema
from server.model.schema_grammar import MAX_GRAMMAR_CHARS, schema_to_gbnf
from server.model.tools import answer_schema
from tests.server.grammar_oracle import Oracle

CHAT = "/v1/chat/completions"
# Frames a walk may use above its caller. The server calls it some 100 frames deep (gunicorn,
# Flask, the dialect) under Python's default limit of 1,000: 600 leaves room to spare.
BUDGET = 600


@contextlib.contextmanager
def stack_budget(frames: int = BUDGET):
    """Python's recursion limit set `frames` above the caller's depth, for the duration."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def chain(length: int, leaf: object = None) -> dict:
    """{"$ref": "#/$defs/d0"} with d0 -> d1 -> ... -> d{length-1} -> leaf (an integer by default)."""
    defs: dict = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(length)}
    defs[f"d{length}"] = leaf if leaf is not None else {"type": "integer"}
    return {"$ref": "#/$defs/d0", "$defs": defs}


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


def test_a_chain_of_5000_references_is_refused_naming_the_limit():
    with stack_budget(), pytest.raises(SchemaError) as caught:
        check_schema(chain(5000))
    assert caught.value.path == f"$defs.d{MAX_SCHEMA_DEPTH}"
    assert str(MAX_SCHEMA_DEPTH) in caught.value.message
    with stack_budget(), pytest.raises(SchemaError):
        schema_to_gbnf(chain(5000))


def test_a_chain_within_the_limit_is_enforced(oracle):
    with stack_budget():
        gbnf = schema_to_gbnf(chain(MAX_SCHEMA_DEPTH - 1))
    assert oracle.accepts(gbnf, "42") and not oracle.accepts(gbnf, '"42"')
    with pytest.raises(SchemaError):
        check_schema(chain(MAX_SCHEMA_DEPTH))


def test_a_reference_beside_defs_at_the_root_resolves(oracle):
    """The converter skipped the rest of a node with "$ref": a root "$ref" left "$defs" unread."""
    schema = {"$ref": "#/$defs/Point", "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "integer"}}}}}
    gbnf = schema_to_gbnf(schema)
    assert oracle.accepts(gbnf, '{"x": 1}') and not oracle.accepts(gbnf, '{"x": "1"}')


def test_a_definition_named_like_a_property_keeps_its_own_rule(oracle):
    """The converter took any rule of the definition's name for a reference: here the property's."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"$ref": "#/$defs/a"}},
        "required": ["a", "b"],
        "additionalProperties": False,
        "$defs": {"a": {"type": "integer"}},
    }
    gbnf = schema_to_gbnf(schema)
    assert oracle.accepts(gbnf, '{"a": "xy", "b": 7}')
    assert not oracle.accepts(gbnf, '{"a": "xy", "b": "z"}')


def test_too_many_optional_properties_are_refused_with_their_path():
    props = {f"p{i}": {"type": "integer"} for i in range(MAX_OPTIONAL_PROPERTIES + 1)}
    with pytest.raises(SchemaError) as caught:
        check_schema({"type": "object", "properties": {"inner": {"type": "object", "properties": props}}})
    assert caught.value.path == "properties.inner.properties"
    required = {"type": "object", "properties": props, "required": ["p0"]}
    with stack_budget():
        schema_to_gbnf(required)  # one of them required: within the limit


def test_the_worst_schema_within_every_limit_converts_inside_the_budget():
    """As deep as allowed, every level a two-type node (the converter's costliest in frames), the
    deepest an object with the most optional properties, in the tool format around 64 tools."""
    props = {f"p{i}": {"type": ["integer", "null"]} for i in range(MAX_OPTIONAL_PROPERTIES)}
    schema: dict = {"type": ["object", "null"], "properties": props}
    for _ in range(MAX_SCHEMA_DEPTH - 1):  # its properties at the deepest level
        schema = {"type": ["array", "null"], "items": schema}
    with stack_budget():
        check_schema(schema)
        schema_to_gbnf(answer_schema([Tool("t", "", schema)], ToolChoice("auto"), schema))
    with pytest.raises(SchemaError):
        check_schema({"type": "array", "items": schema})
    # 64 tools of it ask for megabytes of rules: the conversion stops at its size limit.
    with stack_budget(), pytest.raises(SchemaError) as caught:
        schema_to_gbnf(answer_schema([Tool(f"t{i}", "", schema) for i in range(64)], ToolChoice("auto")))
    assert f"{MAX_GRAMMAR_CHARS:,} characters" in caught.value.message


def test_deep_references_through_the_api_are_a_400_naming_the_field(client):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    form = {"type": "json_schema", "json_schema": {"name": "n", "schema": chain(5000)}}
    response = client.post(CHAT, json={**body, "response_format": form})
    assert response.status_code == 400, response.get_json()
    field = f"response_format.json_schema.schema.$defs.d{MAX_SCHEMA_DEPTH}"
    assert response.get_json()["error"]["param"] == field
    assert str(MAX_SCHEMA_DEPTH) in response.get_json()["error"]["message"]
    tool = {"type": "function", "function": {"name": "f", "parameters": chain(5000)}}
    response = client.post(CHAT, json={**body, "tools": [tool]})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == f"tools[0].function.parameters.$defs.d{MAX_SCHEMA_DEPTH}"
    ollama = {"model": "gemma-3-270m-q4_k_m", "messages": body["messages"], "format": chain(5000)}
    response = client.post("/api/chat", json=ollama)
    assert response.status_code == 400 and str(MAX_SCHEMA_DEPTH) in response.get_json()["error"]


def _wrap(rng: random.Random, inner: dict, defs: dict) -> dict:
    """`inner` one level down, by one of the ways schemas nest (a reference, most often)."""
    kind = rng.choice(["ref", "ref", "ref", "items", "property", "anyOf", "allOf", "additional"])
    if kind == "ref":
        name = f"s{len(defs)}"
        defs[name] = inner
        return {"$ref": f"#/$defs/{name}"}
    if kind == "items":
        return {"type": "array", "items": inner}
    if kind == "property":
        return {"type": "object", "properties": {"x": inner}}
    if kind == "additional":
        return {"type": "object", "additionalProperties": inner}
    return {kind: [inner] if kind == "allOf" else [{"type": "null"}, inner]}


@st.composite
def deep_schemas(draw) -> dict:
    """Schemas nested up to thousands of levels, mostly through references (flat in the body).
    The levels come from a seeded generator: thousands of draws would overrun hypothesis."""
    depth = draw(st.one_of(st.integers(0, 2 * MAX_SCHEMA_DEPTH), st.integers(0, 6000)))
    rng = random.Random(draw(st.integers(0, 2**32)))
    defs: dict = {}
    node: dict = draw(st.sampled_from([{"type": "integer"}, {"type": "string", "pattern": "^(a|b)+$"}, {}]))
    for _ in range(depth):
        node = _wrap(rng, node, defs)
    return {**node, "$defs": defs} if defs else node


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deep_schemas())
def test_no_schema_makes_a_walk_run_out_of_stack(schema):
    """Before: a chain of a few hundred references ran out of stack in the check."""
    with stack_budget():
        try:
            check_schema(schema)
        except SchemaError as exc:
            assert "deep" in exc.message, exc.message
            return
        schema_to_gbnf(schema)
