"""Ollama's tool calling -> the engine's, and the engine's tool answers -> Ollama's message.

Ollama takes OpenAI's `tools` array as it is, with no `tool_choice` (the model decides:
"auto"), but its messages differ from OpenAI's: an assistant's `tool_calls` carry
`arguments` as an object and need no id, and a tool's result names the tool
(`tool_name`) instead of a call id. The engine links a result to its call by id
(server/model/tools.py writes the result under the call's name), so here a call's id
is its tool's name, and a result without `tool_name` answers the next call of the
assistant turn before it that no result has answered yet.

Answers: a direct answer streams as content; a call is sent whole once its arguments
are complete (`arguments` as an object), as Ollama does.
"""

from __future__ import annotations

import json
from typing import Any

from server.engine.request import Message, ToolCall
from server.errors import InvalidRequest
from server.http.openai.tools import NAME
from server.model.jsondepth import deeper_than
from server.model.tool_answer import AnswerReader
from server.model.tools import MAX_JSON_DEPTH


def calls_of(where: str, value: Any) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls`: [{"function": {"name", "arguments": {...}}}]."""
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{where}' must be a non-empty array", where)
    calls = []
    for i, item in enumerate(value):
        at = f"{where}[{i}].function"
        spec = item.get("function") if isinstance(item, dict) else None
        if not isinstance(spec, dict):
            raise InvalidRequest(f"'{at}' is required and must be an object", at)
        name, arguments = spec.get("name"), spec.get("arguments", {})
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequest(f"'{at}.name' must be 1-64 letters, digits, _ or -", f"{at}.name")
        if not isinstance(arguments, dict):
            raise InvalidRequest(f"'{at}.arguments' must be an object", f"{at}.arguments")
        calls.append(ToolCall(name, name, json.dumps(arguments, ensure_ascii=False)))
    return tuple(calls)


class Results:
    """Links each tool message of a conversation to the call it answers (see the module doc)."""

    def __init__(self) -> None:
        self.pending: list[str] = []  # names of the last assistant turn's calls not yet answered

    def called(self, calls: tuple[ToolCall, ...]) -> None:
        self.pending = [c.name for c in calls]

    def result(self, where: str, item: dict, content: str) -> Message:
        name = item.get("tool_name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest(f"'{where}.tool_name' must be a string", f"{where}.tool_name")
        if name is None and self.pending:
            name = self.pending[0]
        if name in self.pending:
            self.pending.remove(name)
        return Message("tool", content, tool_call_id=name)


class ToolReply:
    """Reads an answer in the tool format as it streams: what is content, and the call at the end."""

    def __init__(self) -> None:
        self.reader, self.text = AnswerReader(), ""

    def content(self, text: str) -> str:
        """The content a piece of the answer's text adds (a call's text adds none)."""
        self.text += text
        return _content(self.reader.feed(text))

    def finish(self) -> tuple[str, list[dict]]:
        """The content still held back, and the answer's tool calls in Ollama's shape. A call
        cut short (num_predict) has no arguments object to give: its text comes as content."""
        events, answer = self.reader.finish()
        if answer.name is None:
            return _content(events), []
        if deeper_than(answer.arguments or "", MAX_JSON_DEPTH):  # json.loads recurses once per level
            return self.text, []
        try:
            arguments = json.loads(answer.arguments or "")
        except ValueError:
            return self.text, []
        return "", [{"function": {"name": answer.name, "arguments": arguments}}]


def _content(events: list[tuple[str, str]]) -> str:
    return "".join(text for kind, text in events if kind == "content")
