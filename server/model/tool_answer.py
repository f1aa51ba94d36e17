"""Reading a tool answer back (server/model/tools.py's format), whole or as it streams.

The grammar fixes the answer's shape: `{"tool_call": {"name": "...", "arguments": ...}}`
or `{"response": ...}`, keys in that order, single spaces at most. `AnswerReader`
takes the text piece by piece and says what it has learnt as soon as it can:
("content", text) for a direct answer (a string's decoded characters, or the raw
JSON of another value), ("call", name) once a call's name is complete, then
("arguments", text) fragments of the arguments' JSON, exactly as written (so the
fragments of a stream join to the same text a whole answer gives). Text that is not
in this shape (an answer cut short before its first key) is passed on as content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

HEAD = re.compile(r'\s*\{\s*"(tool_call|response)"\s*:\s*')
CALL = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
PATIENCE = 64  # characters the head may take before the text is taken for something else
_OPEN, _CLOSE = "{[", "}]"


# (kind, text) pieces of the answer, as the reader finds them: kind is content, call or arguments.
Events = list[tuple[str, str]]


@dataclass
class Answer:
    content: str | None = None  # a direct answer (or the text, if it was not in the format)
    name: str | None = None  # the tool called
    arguments: str | None = None  # its arguments, JSON text


class AnswerReader:
    def __init__(self) -> None:
        self.buf, self.pos, self.state = "", 0, "head"
        self.kind = "content"  # what a value's text is reported as: "content" or "arguments"
        self.depth, self.in_string, self.escaped, self.started = 0, False, False, False
        self.decoded = 0  # characters of a direct string answer already reported
        self.answer = Answer()

    def feed(self, text: str) -> list[tuple[str, str]]:
        self.buf += text
        events: list[tuple[str, str]] = []
        while True:
            before = (self.state, self.pos)
            getattr(self, "_" + self.state)(events)
            if (self.state, self.pos) == before:
                return events

    def finish(self) -> tuple[list[tuple[str, str]], Answer]:
        """What is left once the text is complete, and the whole answer."""
        events: list[tuple[str, str]] = []
        if self.state == "head" and self.buf:  # never took the shape: it is plain text
            self.state = "raw"
            self._raw(events)
        return events, self.answer

    # --- states: each consumes what it can from buf[pos:] ---------------------------
    def _head(self, events: Events) -> None:
        match = HEAD.match(self.buf)
        if match is None:
            if len(self.buf) > PATIENCE or (self.buf.strip() and not self.buf.lstrip().startswith("{")):
                self.state = "raw"
            return
        self.pos = match.end()
        self.state = "call" if match.group(1) == "tool_call" else "value_start"

    def _raw(self, events: Events) -> None:
        if self.pos < len(self.buf):
            self._say(events, "content", self.buf[self.pos :])
            self.pos = len(self.buf)

    def _call(self, events: Events) -> None:
        match = CALL.match(self.buf, self.pos)
        if match is None:
            return
        self.answer.name = json.loads(f'"{match.group(1)}"')
        events.append(("call", self.answer.name))
        self.pos, self.kind, self.state = match.end(), "arguments", "value_start"

    def _value_start(self, events: Events) -> None:
        while self.pos < len(self.buf) and self.buf[self.pos].isspace():  # the space after ":" came late
            self.pos += 1
        if self.pos >= len(self.buf):
            return
        if self.kind == "content" and self.buf[self.pos] == '"':
            self.pos += 1
            self.state = "string"
            self.answer.content = ""
        else:
            self.state = "value"

    def _string(self, events: Events) -> None:
        """A direct answer's string: report its characters decoded, escapes included."""
        raw = self.buf[self.pos :]
        end, escaped = None, False
        for i, c in enumerate(raw):
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                end = i
                break
        literal = raw if end is None else raw[:end]
        text = json.loads(f'"{_complete_escapes(literal)}"')
        if len(text) > self.decoded:
            self._say(events, "content", text[self.decoded :])
            self.decoded = len(text)
        if end is not None:
            self.pos += end + 1
            self.state = "tail"

    def _value(self, events: Events) -> None:
        """A JSON value's text as written, up to its end (a closing bracket at depth 0, or the
        delimiter after a scalar)."""
        start, i = self.pos, self.pos
        while i < len(self.buf):
            c = self.buf[i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif c == "\\":
                    self.escaped = True
                elif c == '"':
                    self.in_string = False
            elif c == '"':
                self.in_string = True
            elif c in _OPEN:
                self.depth += 1
            elif c in _CLOSE or (c in ", " and self.depth == 0 and self.started):
                if self.depth == 0:  # the delimiter after a scalar
                    self._finish_value(events, start, i)
                    return
                self.depth -= 1
                if self.depth == 0:
                    self._finish_value(events, start, i + 1)
                    return
            self.started = True
            i += 1
        if i > start:
            self._say(events, self.kind, self.buf[start:i])
        self.pos = i

    def _finish_value(self, events: Events, start: int, end: int) -> None:
        if end > start:
            self._say(events, self.kind, self.buf[start:end])
        self.pos, self.state = end, "tail"

    def _tail(self, events: Events) -> None:
        self.pos = len(self.buf)

    def _say(self, events: Events, kind: str, text: str) -> None:
        events.append((kind, text))
        field = "arguments" if kind == "arguments" else "content"
        setattr(self.answer, field, (getattr(self.answer, field) or "") + text)


def _complete_escapes(literal: str) -> str:
    """The longest prefix of a JSON string's inside that decodes on its own: no half escape,
    no high surrogate waiting for its low half."""
    i, n = 0, len(literal)
    while i < n:
        if literal[i] != "\\":
            i += 1
            continue
        if i + 1 >= n:
            return literal[:i]
        if literal[i + 1] != "u":
            i += 2
            continue
        if i + 6 > n:
            return literal[:i]
        if 0xD800 <= int(literal[i + 2 : i + 6], 16) <= 0xDBFF:  # the high half of a surrogate pair
            rest = literal[i + 6 : i + 12]  # its low half may still come: "", "\\", "\\uDC"...
            if len(rest) < 6 and (rest in ("", "\\") or rest.startswith("\\u")):
                return literal[:i]
        i += 6
    return literal
