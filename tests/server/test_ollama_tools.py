"""Ollama's tool messages -> the engine's, and tool answers -> Ollama's calls (no model needed)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from server.errors import InvalidRequest
from server.http.ollama.schema import validate_ollama
from server.http.ollama.tools import ToolReply
from server.settings import Settings

SETTINGS = Settings(n_ctx=512, max_tokens=64, max_tokens_ceiling=256)
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def chat(messages, **body):
    return validate_ollama("chat", {"model": "m", "messages": messages, **body}, SETTINGS).request


def test_results_answer_the_calls_before_them_by_name_or_in_order():
    calls = [{"function": {"name": "a", "arguments": {"x": 1}}}, {"function": {"name": "b"}}]
    request = chat(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "content": "B", "tool_name": "b"},
            {"role": "tool", "content": "A"},  # no name: the call not yet answered
        ],
        tools=[TOOL],
    )
    assistant, b, a = request.messages[1:]
    assert [(c.name, c.arguments) for c in assistant.tool_calls] == [("a", '{"x": 1}'), ("b", "{}")]
    assert (b.tool_call_id, a.tool_call_id) == ("b", "a")
    assert request.uses_tools and request.tool_choice.mode == "auto"


def test_no_tools_no_tool_format():
    assert not chat([{"role": "user", "content": "hi"}]).uses_tools


def test_a_call_comes_whole_with_its_arguments_as_an_object():
    reply = ToolReply()
    text = '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}'
    assert [reply.content(text[i : i + 5]) for i in range(0, len(text), 5)] == [""] * len(range(0, len(text), 5))
    assert reply.finish() == ("", [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}])


def test_a_direct_answer_is_content_as_it_streams():
    reply = ToolReply()
    pieces = [reply.content(p) for p in ['{"response": "Hel', "lo \\u00e9", '"}']]
    assert "".join(pieces) + reply.finish()[0] == "Hello é" and reply.finish()[1] == []


def test_a_call_cut_short_comes_back_as_text():
    reply = ToolReply()
    cut = '{"tool_call": {"name": "get_weather", "arguments": {"city": "Par'
    reply.content(cut)
    assert reply.finish() == (cut, [])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
CALLS = st.lists(
    st.fixed_dictionaries({"function": st.fixed_dictionaries({}, optional={"name": JSON, "arguments": JSON})}) | JSON,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(
    tools=st.none() | JSON | st.lists(st.just(TOOL) | JSON, max_size=3),
    calls=st.none() | CALLS | JSON,
    tool_name=st.none() | JSON,
)
def test_any_tool_fields_are_taken_or_refused_by_name(tools, calls, tool_name):
    """Whatever the tool fields hold, the answer is a request or an InvalidRequest naming a field."""
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": "42", "tool_name": tool_name},
    ]
    try:
        chat(messages, tools=tools)
    except InvalidRequest as exc:
        assert exc.field and (exc.field.startswith(("tools", "messages")))
