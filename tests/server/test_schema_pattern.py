"""JSON Schema `pattern`: the subset a grammar enforces exactly is accepted, anything else is a 400.

`^(ab$` (an unbalanced group) was accepted and answered as if the group were closed, while
every other keyword the grammar cannot enforce is refused. The converter behind it trusted
its input in other ways too: `^a]$` made it loop forever, `^a|b$` lost a quote of the
string. Now a pattern is checked first (server/model/schema_pattern.py), and the grammar of
every accepted pattern is compared with Python's `re` through llama.cpp's own grammar
sampler (tests/server/grammar_oracle.py).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.constraints.grammar import check_grammar
from server.model.schema_grammar import SchemaError, schema_to_gbnf
from server.model.schema_pattern import MAX_GROUP_DEPTH, MAX_REPEAT
from tests.server.grammar_oracle import Oracle

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def oracle(gemma_gguf):
    o = Oracle(gemma_gguf)
    yield o
    o.close()


def string_schema(pattern: str) -> dict:
    return {"type": "string", "pattern": pattern}


REFUSED = [
    ("^(ab$", "'(' without its ')'"),
    ("^ab)$", "')' without its '('"),
    ("^a]$", "']' without"),  # looped forever in the converter
    ("^a}$", "'}' without"),  # looped forever too
    ("^[ab$", "'[' without its ']'"),
    ("^*a$", "nothing"),
    ("^a**$", "nothing"),
    ("^a*?$", "nothing"),
    ("^{2}$", "nothing"),
    ("^a{2,1}$", "below its minimum"),
    ("^a{,3}$", "not a count"),
    ("^a{x}$", "not a count"),
    (f"^a{{0,{MAX_REPEAT + 1}}}$", f"at most {MAX_REPEAT}"),
    ("^(a|)$", "empty"),
    ("^(|a)$", "empty"),
    ("^a|$", "empty"),
    ("^()$", "empty"),
    ("^[]$", "empty class"),
    ("^[[a]$", "inside a class"),
    ("^(a?)*$", "can match nothing"),  # llama.cpp refuses the grammar: it recurses without consuming
    ("^(a|b*)+$", "can match nothing"),
    ("^((a)?){2,}$", "can match nothing"),
    ("^[z-a]$", "backwards"),
    ("^[ -~]+$", "a quote, a backslash"),  # the range holds '"' and '\\': the answer would leave its string
    ("^(?:ab)$", "'(?'"),
    ("^a$b$", "anchors"),
    ('^a"$', "cannot hold it raw"),
    ("^a\nb$", "cannot hold it raw"),
    ("^a.b$", "'.'"),
    ("^[^a]$", "'[^'"),
    ("^\\d$", "'\\'"),
    ("[a-z]+", "anchored"),
    ("^" + "(" * (MAX_GROUP_DEPTH + 1) + "a" + ")" * (MAX_GROUP_DEPTH + 1) + "$", f"more than {MAX_GROUP_DEPTH}"),
]


@pytest.mark.parametrize("pattern, words", REFUSED, ids=[p[:30] for p, _ in REFUSED])
def test_patterns_outside_the_subset_are_refused_with_their_path(pattern, words):
    with pytest.raises(SchemaError) as caught:
        schema_to_gbnf({"type": "object", "properties": {"code": string_schema(pattern)}})
    assert caught.value.path == "properties.code.pattern"
    assert words in caught.value.message


def test_an_unbalanced_group_is_a_400_naming_the_field(client):
    schema = {"type": "object", "properties": {"code": string_schema("^(ab$")}, "required": ["code"]}
    form = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "response_format": form}
    response = client.post(CHAT, json=body)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["param"] == "response_format.json_schema.schema.properties.code.pattern"
    assert "'('" in error["message"]


@pytest.mark.parametrize(
    "pattern, inside, outside",
    [
        ("^a|bc$", ["a", "bc"], ["abc", "", "b"]),  # a top-level | stays inside the string's quotes
        ("^[a-c]{2,3}(-[0-9]+)?$", ["ab", "abc-12"], ["a", "abcd", "ab-"]),
        ("^(ab|c)*d$", ["d", "abcd", "cabd"], ["ad", "abc"]),
        ("^$", [""], ["a"]),
        ("^é[α-ω]+$", ["éαβ"], ["é", "eα"]),
    ],
)
def test_accepted_patterns_are_enforced_exactly(oracle, pattern, inside, outside):
    gbnf = schema_to_gbnf(string_schema(pattern))
    for text in inside:
        assert oracle.accepts(gbnf, json.dumps(text, ensure_ascii=False)), text
    for text in outside:
        assert not oracle.accepts(gbnf, json.dumps(text, ensure_ascii=False)), text


# Patterns from the characters that matter: the syntax, a few letters, a quote and a space.
RAW = st.text(alphabet='ab1-|()[]{}*+?,^$" é', max_size=14).map(lambda body: f"^{body}$")


@st.composite
def subset_patterns(draw, depth: int = 0) -> str:
    """Patterns inside the subset, mostly: alternatives of sequences of quantified atoms."""
    alternatives = []
    for _ in range(draw(st.integers(1, 3))):
        items = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(["char", "char", "class", "group"] if depth < 3 else ["char", "class"]))
            if kind == "char":
                atom = draw(st.sampled_from("ab-é1 "))
            elif kind == "class":
                atom = draw(st.sampled_from(["[ab]", "[a-c]", "[-a]", "[0-9é]", "[b-b]"]))
            else:
                atom = "(" + draw(subset_patterns(depth + 1)) + ")"
            quantifier = draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{0,2}", "{1,}", "{0}"]))
            items.append(atom + quantifier)
        alternatives.append("".join(items))
    return "|".join(alternatives)


@st.composite
def mutated_patterns(draw) -> str:
    """A pattern of the subset with one character taken out or one of the syntax put in: near misses."""
    body = draw(subset_patterns())
    at = draw(st.integers(0, len(body)))
    if body and draw(st.booleans()):
        body = body[:at] + body[at + 1 :]
    else:
        body = body[:at] + draw(st.sampled_from("()[]{}|*+?-")) + body[at:]
    return f"^{body}$"


def _judge(oracle, pattern: str, texts: list[str]) -> None:
    """Refused with the keyword's path, or a grammar llama.cpp parses that accepts exactly re's matches."""
    try:
        gbnf = schema_to_gbnf(string_schema(pattern))
    except SchemaError as exc:
        assert exc.path == "pattern", exc.message
        return
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        pytest.fail(f"{pattern!r} is no regular expression ({exc}), yet it was accepted")
    check_grammar(oracle.vocab, gbnf)
    for text in texts:
        expected = compiled.fullmatch(text) is not None
        assert oracle.accepts(gbnf, json.dumps(text, ensure_ascii=False)) == expected, (pattern, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=st.one_of(RAW, mutated_patterns()), texts=st.lists(st.text(alphabet="ab1- é", max_size=6), max_size=4))
def test_any_pattern_is_refused_or_enforced_exactly(oracle, pattern, texts):
    """Before: '^(ab$' was enforced as '^(ab)$', '^a|b$' let the answer out of its string."""
    _judge(oracle, pattern, texts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_patterns_in_the_subset_are_enforced_exactly(oracle, data):
    body = data.draw(subset_patterns())
    pattern = f"^{body}$"
    matching = data.draw(st.lists(st.from_regex(re.compile(pattern), fullmatch=True), max_size=3))
    others = data.draw(st.lists(st.text(alphabet="ab1- é", max_size=6), max_size=3))
    _judge(oracle, pattern, matching + others)
