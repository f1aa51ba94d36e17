"""JSON Schema -> GBNF: every keyword enforced or refused, checked with llama.cpp's own grammar sampler.

No decoding: the grammars are judged by walking texts through a real grammar
sampler over Gemma's vocabulary (tests/server/grammar_oracle.py), so "the grammar
accepts exactly the valid texts" is tested against the component that enforces it.
"""

from __future__ import annotations

import datetime
import enum
import json
import random
import uuid
from decimal import Decimal
from typing import Optional

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from server.engine.constraints.grammar import GrammarError, check_grammar
from server.model.decimal_range import as_decimal
from server.model.schema_grammar import SchemaError, schema_to_gbnf
from tests.server.grammar_oracle import Oracle


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


def _bound(rng: random.Random):
    c = rng.random()
    if c < 0.15:
        return None
    return rng.randint(-120, 120) if c < 0.5 else round(rng.uniform(-50, 50), rng.randint(0, 3))


def _in(x: Decimal, lo, lo_incl, hi, hi_incl) -> bool:
    above = lo is None or x > lo or (lo_incl and x == lo)
    return above and (hi is None or x < hi or (hi_incl and x == hi))


def test_numeric_bounds_accept_exactly_the_numbers_inside(oracle):
    """Random minimum/maximum/exclusive* on integers and numbers; candidates around the bounds."""
    rng = random.Random(7)
    checked = 0
    for _ in range(120):
        kind = rng.choice(["integer", "number"])
        schema: dict = {"type": kind}
        lo, hi = _bound(rng), _bound(rng)
        lo_key = rng.choice(["minimum", "exclusiveMinimum"])
        hi_key = rng.choice(["maximum", "exclusiveMaximum"])
        if lo is not None:
            schema[lo_key] = lo
        if hi is not None:
            schema[hi_key] = hi
        try:
            gbnf = schema_to_gbnf(schema)
        except SchemaError:
            assert lo is not None and hi is not None and lo >= hi - 1, schema  # only empty ranges are refused
            continue
        cands = {str(rng.randint(-130, 130)) for _ in range(8)}
        cands |= {str(round(rng.uniform(-60, 60), 2)) for _ in range(8)}
        for b in (lo, hi):
            if b is not None:
                cands |= {str(round(b + d, 4)) for d in (0, 1, -1, 0.5, -0.5, 0.001, -0.001)}
        for text in cands:
            text = text[:-2] if text.endswith(".0") else text
            if text == "-0":
                continue
            x = Decimal(text)
            want = _in(
                x,
                None if lo is None else as_decimal(lo),
                lo_key == "minimum",
                None if hi is None else as_decimal(hi),
                hi_key == "maximum",
            )
            if kind == "integer" and "." in text:
                want = False
            assert oracle.accepts(gbnf, text) == want, (schema, text)
            checked += 1
    assert checked > 1000


def test_a_bounded_number_has_at_most_15_significant_digits(oracle):
    """0.9999999999999999 (16 nines) reads back as 1.0: below an exclusive maximum of 1 it must not be written."""
    gbnf = schema_to_gbnf({"type": "number", "exclusiveMaximum": 1, "minimum": 0})
    assert oracle.accepts(gbnf, "0." + "9" * 15)
    assert not oracle.accepts(gbnf, "0." + "9" * 16)
    assert not oracle.accepts(gbnf, "1") and not oracle.accepts(gbnf, "1e0")


def test_strings_refuse_raw_control_characters(oracle):
    gbnf = schema_to_gbnf({"type": "string"})
    assert oracle.accepts(gbnf, '"a\\nb \\"q\\" \\u00e9"')
    assert not oracle.accepts(gbnf, '"a\nb"') and not oracle.accepts(gbnf, '"tab\tx"')


def test_a_type_list_keeps_its_keywords_and_enums_keep_their_type(oracle):
    gbnf = schema_to_gbnf({"type": ["integer", "null"], "minimum": 5})
    assert oracle.accepts(gbnf, "7") and oracle.accepts(gbnf, "null") and not oracle.accepts(gbnf, "3")
    gbnf = schema_to_gbnf({"type": "string", "enum": ["a", 1, "b"]})
    assert oracle.accepts(gbnf, '"a"') and not oracle.accepts(gbnf, "1")
    gbnf = schema_to_gbnf({"description": "anything"})
    assert all(oracle.accepts(gbnf, t) for t in ("1", '"x"', "[true]", '{"a": null}'))


@pytest.mark.parametrize(
    "fmt, good, bad",
    [
        ("date", "2024-02-29", "2024-13-01"),
        ("date-time", "2024-02-29T12:30:00Z", "2024-02-29 12:30"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567"),
        ("email", "ada.lovelace@example.org", "ada@@example"),
        ("uri", "https://example.org/a/b", "example.org"),
    ],
)
def test_string_formats(oracle, fmt, good, bad):
    gbnf = schema_to_gbnf({"type": "string", "format": fmt})
    assert oracle.accepts(gbnf, json.dumps(good)) and not oracle.accepts(gbnf, json.dumps(bad))


class Color(str, enum.Enum):
    red = "red"
    green = "green"


class Address(BaseModel):
    city: str = Field(max_length=20)
    zip: Optional[str] = Field(default=None, max_length=8)


class Person(BaseModel):
    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=120)
    height: float = Field(gt=0, lt=3)
    color: Color
    tags: list[str] = Field(max_length=3)
    born: datetime.date
    id: uuid.UUID
    address: Address
    nickname: Optional[str] = None


def test_pydantic_schemas_compile_and_accept_their_instances(oracle):
    schema = to_strict_json_schema(Person)
    gbnf = schema_to_gbnf(schema)
    check_grammar(oracle.vocab, gbnf)
    person = Person(
        name="Ada",
        age=36,
        height=1.65,
        color=Color.green,
        tags=["maths"],
        born=datetime.date(1815, 12, 10),
        id=uuid.UUID(int=5),
        address=Address(city="London"),
    )
    text = json.dumps(json.loads(person.model_dump_json()))
    assert oracle.accepts(gbnf, text)
    assert not oracle.accepts(gbnf, text.replace('"age": 36', '"age": 121'))
    assert not oracle.accepts(gbnf, text.replace('"maths"', '"a", "b", "c", "d"'))


BAD_SCHEMAS = [
    ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}}, "properties.a.multipleOf"),
    ({"type": "string", "format": "hostname"}, "format"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, ""),
    ({"oneOf": [{"type": "string"}]}, "oneOf"),
    ({"$ref": "#/$defs/Missing"}, "$ref"),
    ({"type": "strng"}, "type"),
    ({"type": "string", "pattern": "^.*$"}, "pattern"),
    ({"type": "string", "pattern": "[a-z]+"}, "pattern"),
    ({"type": "object", "properties": {}, "required": ["x"]}, "required"),
    ({"type": "string", "format": "date", "maxLength": 5}, "format"),
    ({"anyOf": [{"type": "string"}], "minLength": 2}, "minLength"),
    ({"type": "string", "minimum": 3}, "minimum"),
    ({"type": "array", "items": {"not": {"type": "null"}}}, "items.not"),
    ({"type": "string", "maxLength": 5000}, "maxLength"),
    ([1, 2], ""),
]


@pytest.mark.parametrize("schema, path", BAD_SCHEMAS, ids=[repr(s)[:40] for s, _ in BAD_SCHEMAS])
def test_keywords_that_cannot_be_enforced_are_refused_with_their_path(schema, path):
    with pytest.raises(SchemaError) as caught:
        schema_to_gbnf(schema)
    assert caught.value.path == path


def test_grammar_check_refuses_what_llama_cpp_cannot_parse(oracle):
    vocab = oracle.vocab
    for gbnf, words in [
        ("root ::= foo", "Undefined rule identifier 'foo'"),
        ('root ::= "a" (', "expecting ')'"),
        ('x ::= "a"', "root"),
        ('root ::= "a"{3,1}', "maximum below its minimum"),  # would hang llama.cpp's parser
        ("root ::= " + "(" * 30000 + '"a"' + ")" * 30000, "nested more than"),  # would overflow its stack
    ]:
        with pytest.raises(GrammarError) as caught:
            check_grammar(vocab, gbnf)
        assert words in str(caught.value), gbnf
    check_grammar(vocab, 'root ::= "yes" | "no"')


def test_generated_grammars_only_admit_valid_instances(oracle):
    """Valid and invalid instances of a few schemas, judged by jsonschema and by the grammar."""
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": -3, "exclusiveMaximum": 40},
            "x": {"type": ["number", "null"], "exclusiveMinimum": 0.5, "maximum": 2},
            "k": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
        },
        "required": ["n", "k"],
        "additionalProperties": False,
    }
    gbnf = schema_to_gbnf(schema)
    texts = [
        '{"n": 0, "k": ["a"]}',
        '{"n": 39, "k": ["a", "b"], "x": 2}',
        '{"n": -3, "k": ["b"], "x": null}',
        '{"n": 40, "k": ["a"]}',
        '{"n": 1, "k": ["a"], "x": 0.5}',
        '{"n": 1, "k": []}',
        '{"n": 1, "k": ["a", "b", "a"]}',
        '{"n": 1, "k": ["c"]}',
        '{"k": ["a"]}',
    ]
    for text in texts:
        valid = jsonschema.Draft202012Validator(schema).is_valid(json.loads(text))
        assert oracle.accepts(gbnf, text) == valid, text
