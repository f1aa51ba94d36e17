"""Our own dialect's body (/api/respond) -> the engine's Request.

`validate_respond` is the only function that reads /api/respond's JSON; the
limits come from the shared table in server/http/fields.py and errors name the
field as written here (`history[0].content`).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from server.engine.request import Grammar, Message, Request
from server.errors import InvalidRequest
from server.http.defaults import defaults as dialect_defaults
from server.http.fields import (
    LIMITS,
    check,
    check_body,
    check_json_schema,
    check_logit_bias,
    check_stop,
    sampling,
)

ROLES = ("user", "assistant")
FIELDS = (
    "query",
    "system",
    "history",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "seed",
    "stop",
    "stream",
    "ignore_eos",
    "format",
    "grammar",
    "model",
    "keep_alive",
)
# The engine's field names as this dialect's users know them (for errors the engine raises).
NAMES = {"messages": "history", "prompt": "query", "schema": "format"}


def validate_respond(
    body: Any, max_tokens_default: int, max_tokens_ceiling: int, defaults: Mapping[str, Any] = MappingProxyType({})
) -> Request:
    """Check a parsed JSON body field by field; return the engine request with defaults filled
    (`defaults`: the model's own sampling defaults, from its preset, over this dialect's in defaults.py)."""
    given = check_body(body, {name: LIMITS[name] for name in FIELDS}, {"max_tokens": max_tokens_ceiling})
    own = {"max_tokens": max_tokens_default, "stream": False, "history": [], "system": None}
    values = dialect_defaults("respond", defaults) | own | given
    check_stop(values)
    check_logit_bias(values)
    if not values["query"].strip():
        raise InvalidRequest("'query' must not be blank", "query")
    messages = [Message("system", values["system"])] if values["system"] else []
    messages += [_turn(i, item) for i, item in enumerate(values["history"])]
    messages.append(Message("user", values["query"]))
    return Request(
        messages=tuple(messages), sampling=sampling(values), stream=values["stream"], grammar=_grammar(values)
    )


def _grammar(values: dict[str, Any]) -> Grammar | None:
    """`format` ("json" or a JSON Schema) or `grammar` (GBNF): what the answer must match."""
    fmt, gbnf = values.get("format"), values.get("grammar")
    if fmt is not None and gbnf is not None:
        raise InvalidRequest("give 'format' or 'grammar', not both", "grammar")
    if isinstance(fmt, str):
        if fmt != "json":
            raise InvalidRequest("'format' must be \"json\" or a JSON Schema object", "format")
        return Grammar.json_object()
    if fmt is not None:
        check_json_schema(fmt, "format")
        return Grammar(schema=fmt)
    return Grammar(gbnf=gbnf) if gbnf is not None else None


def _turn(i: int, item: Any) -> Message:
    where = f"history[{i}]"
    if not isinstance(item, dict) or set(item) != {"role", "content"}:
        raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
    if not isinstance(item["role"], str) or item["role"] not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)}", f"{where}.role")
    check(f"{where}.content", item["content"], LIMITS["content"])
    return Message(item["role"], item["content"])
