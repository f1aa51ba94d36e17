"""Structured answers through both dialects on the shared engine (Flask's test client, real inference).

/api/respond's `format` and `grammar`, /v1's response_format, tools and logprobs,
and every way of getting them wrong (a 400 naming the field as the dialect names it).
"""

from __future__ import annotations

import json

import pytest

USER = [{"role": "user", "content": "Is the sky blue?"}]
YES_NO = 'root ::= "yes" | "no"'
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}


def test_respond_grammar_constrains_and_says_so(client):
    body = {"query": "Is the sky blue? Answer yes or no.", "grammar": YES_NO, "max_tokens": 4, **GREEDY}
    answer = client.post("/api/respond", json=body).json
    assert answer["response"] in ("yes", "no") and answer["constrained"] is True
    assert answer["finish_reason"] == "stop"
    plain = client.post("/api/respond", json={"query": "hi", "max_tokens": 2}).json
    assert "constrained" not in plain
    events = [
        json.loads(line[6:])
        for line in client.post("/api/respond", json={**body, "stream": True}).get_data(as_text=True).split("\n\n")
        if line.startswith("data: ")
    ]
    assert "".join(e.get("text", "") for e in events) == answer["response"]
    assert events[-1]["type"] == "done" and events[-1]["constrained"] is True


def test_respond_format_schema_bounds_the_answer(client):
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 7, "maximum": 9}},
        "required": ["n"],
    }
    answer = client.post(
        "/api/respond", json={"query": "Pick a number, as JSON.", "format": schema, "max_tokens": 16, **GREEDY}
    ).json
    assert answer["constrained"] is True and answer["finish_reason"] == "stop", answer
    assert json.loads(answer["response"])["n"] in (7, 8, 9)


BAD_RESPOND = [
    ({"grammar": "root ::= foo"}, "grammar", "Undefined rule"),
    ({"grammar": 'root ::= "a"{9,2}'}, "grammar", "maximum below"),
    ({"grammar": ""}, "grammar", "at least length 1"),
    ({"format": "yaml"}, "format", "json"),
    ({"format": {"type": "string", "format": "hostname"}}, "format.format", "hostname"),
    ({"format": {"type": "object", "properties": {"a": {"not": {}}}}}, "format.properties.a.not", "not"),
    ({"format": "json", "grammar": YES_NO}, "grammar", "not both"),
]


@pytest.mark.parametrize("extra, field, words", BAD_RESPOND, ids=[f"{b[1]}:{b[2]}" for b in BAD_RESPOND])
def test_respond_bad_grammar_or_format_is_400(client, extra, field, words):
    response = client.post("/api/respond", json={"query": "hi", **extra})
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["field"] == field and words in error["message"], error


TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
BAD_V1 = [
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}},
        "response_format.json_schema.name",
    ),
    (
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
            }
        },
        "response_format.json_schema.schema.uniqueItems",
    ),
    (
        {
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "f",
                        "parameters": {"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 2}}},
                    },
                }
            ]
        },
        "tools[0].function.parameters.properties.a.multipleOf",
    ),
    ({"tools": [TOOL, TOOL]}, "tools[1].function.name"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice.function.name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "sometimes"}, "tool_choice"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": 3}, "logprobs"),
    ({"messages": [{"role": "tool", "content": "22 C"}]}, "messages[0].tool_call_id"),
    (
        {"messages": [{"role": "assistant", "tool_calls": [{"id": "c1", "function": {"name": "f"}}]}]},
        "messages[0].tool_calls[0].function.arguments",
    ),
]


@pytest.mark.parametrize("extra, param", BAD_V1, ids=[b[1] for b in BAD_V1])
def test_v1_bad_structured_fields_are_400_naming_the_param(client, extra, param):
    response = client.post("/v1/chat/completions", json={"messages": USER, "max_tokens": 2, **extra})
    assert response.status_code == 400, response.json
    assert response.json["error"]["param"] == param, response.json


def test_completion_logprobs_follow_the_legacy_shape(client):
    body = {"prompt": "Once upon a", "max_tokens": 3, "logprobs": 2, **GREEDY}
    choice = client.post("/v1/completions", json=body).json["choices"][0]
    lp = choice["logprobs"]
    assert "".join(lp["tokens"]) == choice["text"] and len(lp["token_logprobs"]) == 3
    assert lp["text_offset"][0] == 0 and all(len(top) == 2 for top in lp["top_logprobs"])
    # Greedy: each token is the most likely one.
    for token, logprob, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert max(top.values()) == pytest.approx(logprob) and top[token] == pytest.approx(logprob) and logprob <= 0
    no_lp = client.post("/v1/completions", json={**body, "logprobs": None}).json["choices"][0]
    assert no_lp["logprobs"] is None and no_lp["text"] == choice["text"]


def test_v1_json_object_answer_parses(client):
    body = {"messages": [{"role": "user", "content": "A cat, as JSON."}], "max_tokens": 48, **GREEDY}
    choice = client.post("/v1/chat/completions", json={**body, "response_format": {"type": "json_object"}}).json
    choice = choice["choices"][0]
    assert choice["message"]["content"].startswith("{")
    if choice["finish_reason"] == "stop":  # a cut answer cannot parse; a complete one must
        assert isinstance(json.loads(choice["message"]["content"]), dict)
