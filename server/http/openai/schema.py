"""OpenAI's bodies (/v1/chat/completions, /v1/completions) -> the engine's Request.

Limits come from the shared table (server/http/fields.py). Fields OpenAI defines
that we cannot honour are accepted only at their neutral value (NEUTRAL), so a
client that sends `n: 1` or `echo: false` works and one that asks for
more hears why it cannot. What OpenAI's wire format needs beyond the engine
request (the model name, whether to send usage in the stream) travels beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Mapping

from server.engine.request import Message, Request
from server.errors import InvalidRequest
from server.http.defaults import defaults as dialect_defaults
from server.http.fields import LIMITS, Limit, check, check_logit_bias, check_stop, sampling
from server.http.openai.tools import response_grammar, tool_calls_of, tool_choice_of, tool_message, tools_of

# Each OpenAI field -> the row of the shared table that limits it.
ROWS: dict[str, str] = {
    "model": "model",
    "prompt": "query",
    "max_tokens": "max_tokens",
    "max_completion_tokens": "max_tokens",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "logit_bias": "logit_bias",
    "seed": "seed",
    "stop": "stop",
    "stream": "stream",
    "ignore_eos": "ignore_eos",
}
EXTRA: dict[str, Limit] = {
    "messages": Limit(list, 1, (LIMITS["history"].high or 0) * 2 + 2),  # a whole conversation: turns + system + query
    "stream_options": Limit(dict),
    "user": Limit(str, 0, 256),  # OpenAI's end-user id: accepted, unused
    "n": Limit(int),
    "logprobs": Limit((bool, int)),  # chat: whether; completions: how many alternatives (checked below)
    "top_logprobs": Limit(int, 0, 20),
    "echo": Limit(bool),
    "best_of": Limit(int),
    "response_format": Limit(dict),
    "tools": Limit(list),
    "tool_choice": Limit((str, dict)),
    "parallel_tool_calls": Limit(bool),  # accepted; an answer holds at most one call
    "keep_alive": LIMITS["keep_alive"],  # an extension, as Ollama's: how long the model stays loaded after
}
# Accepted only at these values: the one answer, no echo.
NEUTRAL = {
    "n": (1, "send the request again for another answer"),
    "echo": (False, "the prompt is not echoed"),
    "best_of": (1, "send the request again for another answer"),
}

KIND_FIELDS = {
    "chat": {"messages", "top_logprobs", "tools", "tool_choice", "parallel_tool_calls"},
    "completion": {"prompt"},
}
REQUIRED = {"chat": "messages", "completion": "prompt"}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
MESSAGE_KEYS = {"role", "content", "name", "tool_calls", "tool_call_id"}
MAX_LOGPROBS = 20
# The engine's field names as OpenAI's users know them.
NAMES = {"query": "prompt", "schema": "response_format.json_schema.schema", "grammar": "response_format"}


@dataclass(frozen=True)
class OpenAICall:
    request: Request
    model: str | None
    include_usage: bool
    logprobs: bool = False  # the answer carries log-probabilities

    @property
    def forced_call(self) -> bool:
        """The request named the function to call (OpenAI then says finish_reason "stop")."""
        return self.request.uses_tools and self.request.tool_choice.mode == "named"


def validate_openai(
    kind: str,
    body: Any,
    max_tokens_default: int,
    max_tokens_ceiling: int,
    defaults: Mapping[str, Any] = MappingProxyType({}),
) -> OpenAICall:
    """Check a chat ("chat") or completion ("completion") body; return the engine request and extras
    (`defaults`: the model's own sampling defaults, from its preset, over llama-server's)."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    other_kind = set().union(*(f for k, f in KIND_FIELDS.items() if k != kind))
    unknown = sorted((set(body) - set(ROWS) - set(EXTRA)) | (set(body) & other_kind))
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}'", unknown[0])
    if isinstance(body.get("stop"), str):  # OpenAI allows one stop string as well as a list
        body = {**body, "stop": [body["stop"]]}
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is not None:
        body = {**body, "max_tokens": body["max_completion_tokens"]}  # the newer name for the same limit
    values: dict[str, Any] = dict(
        dialect_defaults("openai", defaults),
        max_tokens=max_tokens_default,
        model=None,
        messages=[],
        prompt=None,
        stream=False,
        stream_options=None,
    )
    for name in (*ROWS, *EXTRA):
        if body.get(name) is None:
            continue
        limit = EXTRA.get(name) or LIMITS[ROWS[name]]
        check(name, body[name], limit, max_tokens_ceiling if ROWS.get(name) == "max_tokens" else None)
        values[name] = body[name]
    required = REQUIRED[kind]
    if body.get(required) is None:
        raise InvalidRequest(f"'{required}' is required", required)
    for name, (neutral, advice) in NEUTRAL.items():
        if body.get(name) is not None and body[name] != neutral:
            raise InvalidRequest(f"only {name}={str(neutral).lower()} is supported: {advice}", name)
    check_stop(values)
    check_logit_bias(values)
    if kind == "completion" and not values["prompt"].strip():
        raise InvalidRequest("'prompt' must not be blank", "prompt")
    params = replace(sampling(values), logprobs=_logprobs(kind, values))
    # response_format on completions too, as llama-server has it (OpenAI's completions lack it).
    grammar = response_grammar(values["response_format"]) if values.get("response_format") else None
    if kind == "chat":
        request = _chat_request(values, params, grammar)
    else:
        request = Request(prompt=values["prompt"], sampling=params, stream=values["stream"], grammar=grammar)
    options = values["stream_options"] or {}
    return OpenAICall(request, values["model"], options.get("include_usage") is True, params.logprobs is not None)


def _chat_request(values: dict[str, Any], params, grammar) -> Request:
    tools = tools_of(values["tools"]) if values.get("tools") is not None else ()
    return Request(
        messages=tuple(_message(i, m) for i, m in enumerate(values["messages"])),
        sampling=params,
        stream=values["stream"],
        grammar=grammar,
        tools=tools,
        tool_choice=tool_choice_of(values.get("tool_choice"), tools),
    )


def _logprobs(kind: str, values: dict[str, Any]) -> int | None:
    """How many alternatives per token to report, None for no log-probabilities. Chat: `logprobs`
    true and `top_logprobs` 0-20; completions: `logprobs` the count itself."""
    asked, top = values.get("logprobs"), values.get("top_logprobs")
    if kind == "completion":
        if asked is None:
            return None
        if isinstance(asked, bool) or not 0 <= asked <= MAX_LOGPROBS:
            raise InvalidRequest(f"'logprobs' must be an integer from 0 to {MAX_LOGPROBS}", "logprobs")
        return asked
    if asked is not None and not isinstance(asked, bool):
        raise InvalidRequest("'logprobs' must be a boolean", "logprobs")
    if top is not None and not asked:
        raise InvalidRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    return (top or 0) if asked else None


def _message(i: int, item: Any) -> Message:
    where = f"messages[{i}]"
    if isinstance(item, dict) and item.get("role") == "assistant" and item.get("tool_calls") is not None:
        calls = tool_calls_of(f"{where}.tool_calls", item["tool_calls"])
        content = _text(where, item["content"]) if item.get("content") is not None else ""
        return Message("assistant", content, tool_calls=calls)
    # Client libraries echo back assistant messages with null extras (tool_calls, refusal): ignore those.
    if (
        not isinstance(item, dict)
        or "role" not in item
        or any(v is not None for k, v in item.items() if k not in MESSAGE_KEYS)
    ):
        raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
    if not isinstance(item["role"], str) or item["role"] not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)}", f"{where}.role")
    if item.get("name") is not None:
        check(f"{where}.name", item["name"], LIMITS["model"])  # a participant's name: a short string
    content = _text(where, item.get("content"))
    check(f"{where}.content", content, LIMITS["content"])
    if item["role"] == "tool":
        return tool_message(where, item, content)
    return Message(ROLES[item["role"]], content)


def _text(where: str, content: Any) -> str:
    """A message's text: a string, or a list of {"type": "text", "text": ...} parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise InvalidRequest(
        f"'{where}.content' must be a string or a list of text parts (only text is supported)", f"{where}.content"
    )
