"""OpenAI's structured-answer fields -> the engine's: response_format, tools, tool_choice, and the
messages that carry tool calls and tool results.

Only translation and checking: each tool's parameters and a response_format schema are
checked here (fields.check_json_schema, plain Python) so that an error names the
field as the client wrote it (`tools[1].function.parameters.properties.x.multipleOf`);
turning them into a grammar is the engine's.
"""

from __future__ import annotations

import re
from typing import Any

from server.engine.request import Grammar, Message, Tool, ToolCall, ToolChoice
from server.errors import InvalidRequest
from server.http.fields import check_json_schema

NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_TOOLS = 64


def response_grammar(value: Any) -> Grammar | None:
    """`response_format`: {"type": "text" | "json_object" | "json_schema", "json_schema"?: {...}}."""
    where = "response_format"
    kind = _get(value, "type", str, where)
    if kind == "text":
        return None
    if kind == "json_object":
        return Grammar.json_object()
    if kind != "json_schema":
        raise InvalidRequest(f"'{where}.type' must be text, json_object or json_schema", f"{where}.type")
    spec = _get(value, "json_schema", dict, where)
    name = _get(spec, "name", str, f"{where}.json_schema")
    if not NAME.match(name):
        raise InvalidRequest(
            f"'{where}.json_schema.name' must be 1-64 letters, digits, _ or -", f"{where}.json_schema.name"
        )
    _optional(spec, "strict", bool, f"{where}.json_schema")
    _optional(spec, "description", str, f"{where}.json_schema")
    schema = spec.get("schema")
    if schema is None:
        return Grammar.json_object()
    check_json_schema(schema, f"{where}.json_schema.schema")
    return Grammar(schema=schema)


def tools_of(value: Any) -> tuple[Tool, ...]:
    """`tools`: [{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}]."""
    if not isinstance(value, list) or len(value) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' must be an array of at most {MAX_TOOLS} tools", "tools")
    tools: list[Tool] = []
    for i, item in enumerate(value):
        where = f"tools[{i}]"
        if _get(item, "type", str, where) != "function":
            raise InvalidRequest(f"'{where}.type' must be function", f"{where}.type")
        spec = _get(item, "function", dict, where)
        name = _get(spec, "name", str, f"{where}.function")
        if not NAME.match(name):
            raise InvalidRequest(
                f"'{where}.function.name' must be 1-64 letters, digits, _ or -", f"{where}.function.name"
            )
        if any(t.name == name for t in tools):
            raise InvalidRequest(f"'{where}.function.name': another tool is called {name}", f"{where}.function.name")
        _optional(spec, "strict", bool, f"{where}.function")
        description = _optional(spec, "description", str, f"{where}.function") or ""
        parameters = _optional(spec, "parameters", dict, f"{where}.function")
        if parameters is not None:
            check_json_schema(parameters, f"{where}.function.parameters")
        tools.append(Tool(name, description, parameters))
    return tuple(tools)


def tool_choice_of(value: Any, tools: tuple[Tool, ...]) -> ToolChoice:
    """`tool_choice`: "none" | "auto" | "required" | {"type": "function", "function": {"name"}}."""
    if value is None:
        return ToolChoice("auto" if tools else "none")
    if not tools and value != "none":
        raise InvalidRequest("'tool_choice' needs 'tools'", "tool_choice")
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise InvalidRequest("'tool_choice' must be none, auto, required or a function", "tool_choice")
        return ToolChoice(value)
    if _get(value, "type", str, "tool_choice") != "function":
        raise InvalidRequest("'tool_choice.type' must be function", "tool_choice.type")
    name = _get(_get(value, "function", dict, "tool_choice"), "name", str, "tool_choice.function")
    if not any(t.name == name for t in tools):
        raise InvalidRequest(f"'tool_choice.function.name': no tool is called {name}", "tool_choice.function.name")
    return ToolChoice("named", name)


def tool_calls_of(where: str, value: Any) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls`, as the client echoes them back."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{where}' must be a non-empty array", where)
    calls = []
    for i, item in enumerate(value):
        at = f"{where}[{i}]"
        call_id = _get(item, "id", str, at)
        spec = _get(item, "function", dict, at)
        calls.append(
            ToolCall(call_id, _get(spec, "name", str, f"{at}.function"), _get(spec, "arguments", str, f"{at}.function"))
        )
    return tuple(calls)


def tool_message(where: str, item: dict, content: str) -> Message:
    return Message("tool", content, tool_call_id=_get(item, "tool_call_id", str, where))


def _name(name: str, where: str) -> str:
    if not NAME.match(name):
        raise InvalidRequest(f"'{where}' must be 1-64 letters, digits, _ or -", where)
    return name


def _get(obj: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(obj, dict):
        raise InvalidRequest(f"'{where}' must be an object", where)
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
        raise InvalidRequest(f"'{where}.{key}' is required and must be {_KINDS[kind]}", f"{where}.{key}")
    return value


def _optional(obj: dict, key: str, kind: type, where: str) -> Any:
    return None if obj.get(key) is None else _get(obj, key, kind, where)


_KINDS = {str: "a string", dict: "an object", bool: "a boolean", list: "an array"}
