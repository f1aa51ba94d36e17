"""JSON inside a message's strings (a tool call's arguments, a tool's result) is read to a bounded depth.

The body's nesting is capped before parsing (server/http/body.py), but brackets inside
strings do not count there: a tool call whose arguments were "[" * 15000 + "]" * 15000
reached json.loads in the tool format (server/model/tools.py), a RecursionError and a
500. Now such text is kept as text past MAX_JSON_DEPTH.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from server.http.ollama.tools import ToolReply
from server.model.prompt import Message, ToolCall
from server.model.tools import MAX_JSON_DEPTH, Tool, ToolChoice, tool_conversation

CHAT = "/v1/chat/completions"


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def conversation(arguments: str, result: str) -> list[Message]:
    """A call and its result; in the tool format they come after the tools' system message."""
    return [
        Message("user", "hi"),
        Message("assistant", "", tool_calls=(ToolCall("c1", "f", arguments),)),
        Message("tool", result, tool_call_id="c1"),
    ]


def test_deep_json_in_a_tool_call_through_the_api_is_no_500(client):
    deep = nested(15_000)
    messages = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": deep}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": deep},
    ]
    response = client.post(CHAT, json={"messages": messages, "max_tokens": 1})
    assert response.status_code == 400, response.get_json()  # 30,000 brackets do not fit the context
    assert response.get_json()["error"]["code"] == "context_length_exceeded"


def test_json_within_the_depth_is_written_as_json_and_deeper_as_text():
    shallow, deep = nested(MAX_JSON_DEPTH), nested(MAX_JSON_DEPTH + 1)
    out = tool_conversation(conversation(shallow, deep), [Tool("f")], ToolChoice("auto"))
    call = json.loads(out[2].content)["tool_call"]
    assert call["arguments"] == json.loads(shallow)  # a value, written back as JSON
    assert json.loads(out[3].content)["tool_result"]["content"] == deep  # kept as the text it was


@settings(max_examples=60, deadline=None)
@given(
    depth=st.one_of(st.integers(0, 2 * MAX_JSON_DEPTH), st.integers(0, 15_000)),
    brackets=st.sampled_from([("[", "]"), ('{"a":', "}"), ("[{", "}]")]),
    inside=st.sampled_from(["", "1", '"x"', '"]]]"']),
)
def test_any_nesting_in_arguments_and_results_is_read_or_kept(depth, brackets, inside):
    """Before: past about 1,000 levels, a RecursionError."""
    opener, closer = brackets
    text = opener * depth + inside + closer * depth
    out = tool_conversation(conversation(text, text), [Tool("f")], ToolChoice("auto"))
    call = json.loads(out[2].content)["tool_call"]["arguments"]
    try:
        expected = json.loads(text) if depth * sum(c in "[{" for c in opener) <= MAX_JSON_DEPTH else text
    except ValueError:
        expected = text
    assert call == expected


def test_an_answer_whose_arguments_nest_deeper_comes_back_as_content():
    """A schema that lets arguments hold any value lets the model nest them as deep as its tokens go:
    Ollama's reply read them with json.loads, a RecursionError past about 1,000 levels."""
    text = '{"tool_call": {"name": "f", "arguments": ' + nested(3000) + "}}"
    reply = ToolReply()
    reply.content(text)
    assert reply.finish() == (text, [])
    reply = ToolReply()
    reply.content('{"tool_call": {"name": "f", "arguments": ' + nested(MAX_JSON_DEPTH) + "}}")
    assert reply.finish()[1] == [{"function": {"name": "f", "arguments": json.loads(nested(MAX_JSON_DEPTH))}}]
