"""Tool calls in a format any instruct model can follow, enforced by a grammar.

The tools are described in the system message (name, description, JSON Schema of
the arguments), and the answer is constrained to one JSON object:
`{"tool_call": {"name": ..., "arguments": {...}}}` or `{"response": "..."}` ("auto"),
only the first ("required"), or the first for one named tool. Each tool's
`parameters` schema is inlined for its `arguments` (its $defs moved beside), so the
arguments of a call always validate. A conversation's earlier calls and the tools'
results are written in the same JSON, as assistant and user turns, which every chat
template accepts. Reading an answer back (whole or streamed) is
server/model/tool_answer.py.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
from typing import Any, Sequence

from server.model.jsondepth import deeper_than
from server.model.prompt import Message, ToolCall

__all__ = ["Tool", "ToolCall", "ToolChoice", "tool_conversation", "answer_schema", "uses_tools"]

MAX_JSON_DEPTH = 32  # of a call's arguments or a tool's result read as JSON, as of a request body


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: Any = None  # JSON Schema of the arguments object (None: no arguments)

    def arguments_schema(self) -> Any:
        return self.parameters if self.parameters is not None else {"type": "object", "properties": {}}


@dataclass(frozen=True)
class ToolChoice:
    mode: str = "auto"  # "auto" | "none" | "required" | "named"
    name: str | None = None  # the tool, when "named"


def uses_tools(tools: Sequence[Tool], choice: ToolChoice) -> bool:
    return bool(tools) and choice.mode != "none"


def tool_conversation(messages: Sequence[Message], tools: Sequence[Tool], choice: ToolChoice) -> list[Message]:
    """Plain system/user/assistant messages: the tools explained in the system message, earlier
    calls and results as JSON text, turns of one role in a row merged (templates want them
    alternating). Without tools in use, calls and results are still written out the same way."""
    active = uses_tools(tools, choice)
    out: list[Message] = []
    for m in messages:
        if m.role == "tool":
            result = {"name": _call_name(messages, m.tool_call_id), "content": _json_or_text(m.content)}
            out.append(Message("user", json.dumps({"tool_result": result}, ensure_ascii=False)))
        elif m.role == "assistant" and m.tool_calls:
            calls = [{"name": c.name, "arguments": _json_or_text(c.arguments)} for c in m.tool_calls]
            out.append(Message("assistant", "\n".join(json.dumps({"tool_call": c}, ensure_ascii=False) for c in calls)))
        elif m.role == "assistant" and active:
            out.append(Message("assistant", json.dumps({"response": m.content}, ensure_ascii=False)))
        else:
            out.append(Message(m.role, m.content))
    if active:
        out = _with_instructions(out, tools, choice)
    return _merged(out)


def answer_schema(tools: Sequence[Tool], choice: ToolChoice, response: Any = None) -> dict[str, Any]:
    """The JSON Schema an answer must match (`response`: a schema for a direct answer's value,
    instead of a string, as when a response_format comes with the tools)."""
    offered = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    defs: dict[str, Any] = {}
    calls = [_call_schema(i, t, defs) for i, t in enumerate(offered)]
    call = {
        "type": "object",
        "properties": {"tool_call": calls[0] if len(calls) == 1 else {"anyOf": calls}},
        "required": ["tool_call"],
        "additionalProperties": False,
    }
    if choice.mode == "auto":
        if response is not None:
            response = _inlined(response, "response", defs)
        direct = {
            "type": "object",
            "properties": {"response": response if response is not None else {"type": "string"}},
            "required": ["response"],
            "additionalProperties": False,
        }
        schema: dict[str, Any] = {"anyOf": [call, direct]}
    else:
        schema = call
    return {**schema, "$defs": defs} if defs else schema


def _call_schema(i: int, tool: Tool, defs: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": _inlined(tool.arguments_schema(), f"tool{i}", defs)},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def _inlined(schema: Any, prefix: str, defs: dict[str, Any]) -> Any:
    """`schema` ready to sit inside another: its $defs/definitions moved into `defs` under
    `prefix`, its local references rewritten to match (a reference to "#" itself included)."""
    if not isinstance(schema, dict):
        return schema
    schema = copy.deepcopy(schema)
    own = {**schema.pop("definitions", {}), **schema.pop("$defs", {})}

    def move(ref: str) -> str:
        if ref == "#":
            defs.setdefault(prefix, schema)
            return f"#/$defs/{prefix}"
        for head in ("#/$defs/", "#/definitions/"):
            if ref.startswith(head):
                return f"#/$defs/{prefix}-{ref[len(head) :]}"
        return ref  # anything else is refused by the schema check, with its path

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if isinstance(node, dict):
            return {k: (move(v) if k == "$ref" and isinstance(v, str) else walk(v)) for k, v in node.items()}
        return node

    for name, sub in own.items():
        defs[f"{prefix}-{name}"] = walk(sub)
    schema = walk(schema)
    if prefix in defs:
        defs[prefix] = schema
    return schema


def _with_instructions(messages: list[Message], tools: Sequence[Tool], choice: ToolChoice) -> list[Message]:
    offered = [t for t in tools if choice.mode != "named" or t.name == choice.name]
    listing = json.dumps(
        [{"name": t.name, "description": t.description, "parameters": t.arguments_schema()} for t in offered],
        ensure_ascii=False,
    )
    call = 'answer with only {"tool_call": {"name": "<tool name>", "arguments": {<the arguments>}}}'
    if choice.mode == "auto":
        how = f'To call a tool, {call}. To answer directly, answer with only {{"response": "<your answer>"}}.'
    elif choice.mode == "named":
        how = f"You must call the tool {choice.name}: {call}."
    else:
        how = f"You must call one of the tools: {call}."
    text = f"You can use these tools (their arguments are described by JSON Schema):\n{listing}\n{how}"
    if messages and messages[0].role == "system":
        return [replace(messages[0], content=messages[0].content + "\n\n" + text), *messages[1:]]
    return [Message("system", text), *messages]


def _merged(messages: list[Message]) -> list[Message]:
    out: list[Message] = []
    for m in messages:
        if out and out[-1].role == m.role and m.role != "system":
            out[-1] = Message(m.role, out[-1].content + "\n\n" + m.content)
        else:
            out.append(m)
    return out


def _call_name(messages: Sequence[Message], call_id: str | None) -> str | None:
    for m in messages:
        for c in m.tool_calls:
            if c.id == call_id:
                return c.name
    return None


def _json_or_text(text: str) -> Any:
    """The JSON value a call's arguments or a tool's result hold, to be written back as JSON; the
    text itself when it is no JSON, or nests deeper than MAX_JSON_DEPTH (parsing it recursed once
    per level: 15,000 levels were a RecursionError, a 500)."""
    if not isinstance(text, str) or deeper_than(text, MAX_JSON_DEPTH):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text
