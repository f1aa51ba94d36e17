"""Validation of OpenAI-format bodies (/v1/chat/completions, /v1/completions).

A sibling of server/validation.py in the same style: one table of fields, and
every limit shared with /api/respond is taken from that module's LIMITS, so a
limit changes in one place. Fields OpenAI defines that we cannot honour are
accepted only at their neutral value (NEUTRAL), so a client that sends `n: 1` or
`presence_penalty: 0` works and one that asks for more hears why it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequest
from server.prompt import Message
from server.validation import DEFAULTS, LIMITS, Limit, _check

# The whole contract; "messages" belongs to chat, "prompt" to completions (KIND_FIELDS).
OPENAI_LIMITS: dict[str, Limit] = {
    "model": Limit(str, 0, 256),
    "messages": Limit(list, 1, LIMITS["history"].high * 2 + 2),
    "messages.content": LIMITS["history.content"],
    "prompt": LIMITS["query"],
    "max_tokens": LIMITS["max_tokens"],
    "max_completion_tokens": LIMITS["max_tokens"],
    **{name: LIMITS[name] for name in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed",
                                       "stop", "stream")},
    "stop.item": LIMITS["stop.item"],
    "stream_options": Limit(dict),
    "user": Limit(str, 0, 256),  # OpenAI's end-user id: accepted, unused
    "n": Limit(int),
    "presence_penalty": Limit((int, float)),
    "frequency_penalty": Limit((int, float)),
    "logprobs": Limit((bool, int)),
    "echo": Limit(bool),
    "best_of": Limit(int),
}

# Accepted only at these values: the one answer, no penalties, no log probabilities.
NEUTRAL = {"n": (1, "send the request again for another answer"),
           "presence_penalty": (0, "use repeat_penalty"), "frequency_penalty": (0, "use repeat_penalty"),
           "logprobs": (False, "log probabilities are not returned"), "echo": (False, "the prompt is not echoed"),
           "best_of": (1, "send the request again for another answer")}

KIND_FIELDS = {"chat": {"messages"}, "completion": {"prompt"}}
REQUIRED = {"chat": "messages", "completion": "prompt"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
MESSAGE_KEYS = {"role", "content", "name"}


@dataclass(frozen=True)
class OpenAIRequest:
    """What the engine needs (the same attributes as a RespondRequest), plus the input itself."""
    model: str | None
    messages: tuple[Message, ...]  # chat: the conversation as sent (no default system prompt yet)
    prompt: str | None             # completions: raw text, no template
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def validate_openai(kind: str, body: Any, max_tokens_default: int, max_tokens_ceiling: int) -> OpenAIRequest:
    """Check a chat ("chat") or completion ("completion") body; return typed values with defaults."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    other_kind = set().union(*(f for k, f in KIND_FIELDS.items() if k != kind))
    unknown = sorted(set(body) - {k for k in OPENAI_LIMITS if "." not in k} | (set(body) & other_kind))
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}'", unknown[0])
    if isinstance(body.get("stop"), str):  # OpenAI allows one stop string as well as a list
        body = {**body, "stop": [body["stop"]]}
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        body = {**body, "max_tokens": body["max_completion_tokens"]}  # the newer name for the same limit
    values: dict[str, Any] = dict(DEFAULTS, max_tokens=max_tokens_default, model=None, messages=[], prompt=None)
    for name, limit in OPENAI_LIMITS.items():
        if "." in name or body.get(name) is None:
            continue
        high = max_tokens_ceiling if name in ("max_tokens", "max_completion_tokens") else limit.high
        _check(name, body[name], limit, high)
        values[name] = body[name]
    required = REQUIRED[kind]
    if body.get(required) is None:
        raise InvalidRequest(f"'{required}' is required", required)
    for name, (neutral, advice) in NEUTRAL.items():
        if name in body and body[name] is not None and body[name] != neutral:
            raise InvalidRequest(f"only {name}={str(neutral).lower()} is supported: {advice}", name)
    for i, item in enumerate(values["stop"]):
        _check(f"stop[{i}]", item, LIMITS["stop.item"], LIMITS["stop.item"].high)
    if kind == "completion" and not values["prompt"].strip():
        raise InvalidRequest("'prompt' must not be blank", "prompt")
    options = values.pop("stream_options", None) or {}
    return OpenAIRequest(
        model=values["model"], messages=tuple(_message(i, m) for i, m in enumerate(values["messages"])),
        prompt=values["prompt"], max_tokens=values["max_tokens"], temperature=float(values["temperature"]),
        top_p=float(values["top_p"]), top_k=values["top_k"], min_p=float(values["min_p"]),
        repeat_penalty=float(values["repeat_penalty"]), seed=values["seed"], stop=tuple(values["stop"]),
        stream=values["stream"], include_usage=options.get("include_usage") is True)


def _message(i: int, item: Any) -> Message:
    where = f"messages[{i}]"
    # Client libraries echo back assistant messages with null extras (tool_calls, refusal): ignore those.
    if not isinstance(item, dict) or "role" not in item or \
            any(v is not None for k, v in item.items() if k not in MESSAGE_KEYS):
        raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
    if item["role"] not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)} (tools are not supported)",
                             f"{where}.role")
    content = _text(where, item.get("content"))
    _check(f"{where}.content", content, OPENAI_LIMITS["messages.content"], OPENAI_LIMITS["messages.content"].high)
    return Message(ROLES[item["role"]], content)


def _text(where: str, content: Any) -> str:
    """A message's text: a string, or a list of {"type": "text", "text": ...} parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    raise InvalidRequest(f"'{where}.content' must be a string or a list of text parts (only text is supported)",
                         f"{where}.content")
