"""The answer side of /v1: a choice's message or text, its tool calls and log-probabilities,
whole or as streamed deltas.

`ChoiceBuilder` is fed the engine's Delta events (the text, and the log-probabilities
of the tokens behind it) and says what a streamed chunk carries for each, and what
the whole choice is at the end. With tools in use the text is the tool format
(server/model/tool_answer.py reads it): a call becomes `tool_calls` (its id, type and
name in the first delta, then `arguments` fragments, as OpenAI streams them), a
direct answer becomes `content`.
"""

from __future__ import annotations

import uuid

from server.engine.request import Delta, TokenLogprob
from server.http.openai.schema import OpenAICall
from server.model.tool_answer import AnswerReader


def _token(piece: bytes) -> str:
    return piece.decode("utf-8", errors="replace")


def chat_entry(record: TokenLogprob) -> dict:
    """One token of a chat answer's `logprobs.content`, OpenAI's shape."""
    return {
        "token": _token(record.piece),
        "logprob": record.logprob,
        "bytes": list(record.piece),
        "top_logprobs": [{"token": _token(p), "logprob": lp, "bytes": list(p)} for _, p, lp in record.top],
    }


def completion_logprobs(records: list[TokenLogprob], offset: int) -> dict:
    """A completion's legacy `logprobs` (tokens, token_logprobs, top_logprobs, text_offset)."""
    offsets = []
    for r in records:
        offsets.append(offset)
        offset += len(_token(r.piece))
    return {
        "tokens": [_token(r.piece) for r in records],
        "token_logprobs": [r.logprob for r in records],
        "top_logprobs": [{_token(p): lp for _, p, lp in r.top} for r in records],
        "text_offset": offsets,
    }


class ChoiceBuilder:
    """One choice of a chat or completion answer, built from the engine's deltas."""

    def __init__(self, kind: str, call: OpenAICall) -> None:
        self.kind, self.call = kind, call
        self.reader = AnswerReader() if kind == "chat" and call.request.uses_tools else None
        self.call_id = "call_" + uuid.uuid4().hex[:24]
        self.text: list[str] = []
        self.records: list[TokenLogprob] = []
        self.offset = 0  # characters of completion text streamed so far (text_offset)

    def add(self, event: Delta) -> list[tuple[str, str]]:
        """Take one Delta; returns what the tool reader learnt from it."""
        self.text.append(event.text)
        self.records.extend(event.logprobs)
        return self.reader.feed(event.text) if self.reader else []

    def delta(self, event: Delta) -> dict | None:
        """The streamed choice for one Delta (None when it says nothing new yet)."""
        learnt = self.add(event)
        if self.kind == "completion":
            logprobs = completion_logprobs(list(event.logprobs), self.offset) if self.call.logprobs else None
            self.offset += len(event.text)
            return {"index": 0, "text": event.text, "logprobs": logprobs, "finish_reason": None}
        delta = self._chat_delta(learnt) if self.reader else {"content": event.text}
        logprobs = {"content": [chat_entry(r) for r in event.logprobs]} if self.call.logprobs else None
        if not delta and not logprobs:
            return None
        return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}

    def last(self, reason: str) -> dict:
        """The closing streamed choice."""
        delta = self._chat_delta(self.reader.finish()[0]) if self.reader else {}
        closing = {"index": 0, "delta": delta} if self.kind == "chat" else {"index": 0, "text": ""}
        return {**closing, "logprobs": None, "finish_reason": self.finish_reason(reason)}

    def whole(self, reason: str) -> dict:
        """The choice of a non-streamed answer, once every delta has been `add`ed."""
        text = "".join(self.text)
        if self.kind == "completion":
            logprobs = completion_logprobs(self.records, 0) if self.call.logprobs else None
            return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}
        message: dict = {"role": "assistant", "content": text}
        if self.reader:
            answer = self.reader.finish()[1]
            message["content"] = answer.content
            if answer.name is not None:
                message["tool_calls"] = [self._call_json(answer.name, answer.arguments or "")]
            elif answer.content is None:  # cut off before it said which: show what there is
                message["content"] = text
        logprobs = {"content": [chat_entry(r) for r in self.records], "refusal": None} if self.call.logprobs else None
        return {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": self.finish_reason(reason)}

    def finish_reason(self, reason: str) -> str:
        called = self.reader is not None and self.reader.answer.name is not None
        if called and reason == "stop" and not self.call.forced_call:
            return "tool_calls"  # as OpenAI: a named (forced) call ends with "stop"
        return reason

    def _call_json(self, name: str, arguments: str) -> dict:
        return {"id": self.call_id, "type": "function", "function": {"name": name, "arguments": arguments}}

    def _chat_delta(self, events: list[tuple[str, str]]) -> dict:
        """The tool reader's events as one chat delta: content, or a call's opening and arguments."""
        delta: dict = {}
        for what, text in events:
            if what == "content":
                delta["content"] = delta.get("content", "") + text
            elif what == "call":
                delta["tool_calls"] = [{"index": 0, **self._call_json(text, "")}]
            else:
                calls = delta.setdefault("tool_calls", [{"index": 0, "function": {"arguments": ""}}])
                calls[0]["function"]["arguments"] += text
        return delta
