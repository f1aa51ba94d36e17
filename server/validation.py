"""Validation of a /api/respond body: one table of every field's type and limits.

`validate_respond` is the only function that reads client JSON; everything past
it works with a `RespondRequest` whose values are known to be in range. Errors
name the offending field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.errors import InvalidRequest

ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Limit:
    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None   # for str: max length; for list: max items
    required: bool = False


# The whole contract. `None` as high for max_tokens means the settings' ceiling.
LIMITS: dict[str, Limit] = {
    "query": Limit(str, 1, 32_000, required=True),
    "system": Limit(str, 0, 8_000),
    "history": Limit(list, 0, 64),
    "history.content": Limit(str, 0, 32_000),
    "max_tokens": Limit(int, 1, None),
    "temperature": Limit((int, float), 0.0, 2.0),
    "top_p": Limit((int, float), 0.0, 1.0),
    "top_k": Limit(int, 0, 1000),
    "min_p": Limit((int, float), 0.0, 1.0),
    "repeat_penalty": Limit((int, float), 0.5, 2.0),
    "seed": Limit(int, 0, 2**32 - 1),
    "stop": Limit(list, 0, 4),
    "stop.item": Limit(str, 1, 64),
    "stream": Limit(bool),
}

DEFAULTS = {"temperature": 0.7, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1,
            "seed": None, "stop": [], "stream": False, "history": [], "system": None}


@dataclass(frozen=True)
class RespondRequest:
    query: str
    system: str | None
    history: tuple[dict, ...]
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    stream: bool


def _check(name: str, value: Any, limit: Limit, high: float | None) -> None:
    kinds = limit.kind if isinstance(limit.kind, tuple) else (limit.kind,)
    # JSON true/false arrive as bool, which Python also counts as int: refuse them for numbers.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join("number" if k is float else k.__name__.replace("str", "string") for k in kinds)
        raise InvalidRequest(f"'{name}' must be a {names}", name)
    size = len(value) if isinstance(value, (str, list)) else value
    if isinstance(value, bool):
        return
    if limit.low is not None and size < limit.low:
        what = "at least" if not isinstance(value, (str, list)) else "at least length"
        raise InvalidRequest(f"'{name}' must be {what} {limit.low}", name)
    if high is not None and size > high:
        what = "at most" if not isinstance(value, (str, list)) else "at most length"
        raise InvalidRequest(f"'{name}' must be {what} {high}", name)


def validate_respond(body: Any, max_tokens_default: int, max_tokens_ceiling: int) -> RespondRequest:
    """Check a parsed JSON body against LIMITS; return typed values with defaults filled."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - {k for k in LIMITS if "." not in k})
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}'", unknown[0])
    values = dict(DEFAULTS, max_tokens=max_tokens_default)
    for name, limit in LIMITS.items():
        if "." in name:
            continue
        if name not in body or body[name] is None:
            if limit.required:
                raise InvalidRequest(f"'{name}' is required", name)
            continue
        high = max_tokens_ceiling if name == "max_tokens" else limit.high
        _check(name, body[name], limit, high)
        values[name] = body[name]
    for i, item in enumerate(values["history"]):
        where = f"history[{i}]"
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
        if item["role"] not in ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)}", f"{where}.role")
        _check(f"{where}.content", item["content"], LIMITS["history.content"], LIMITS["history.content"].high)
    for i, item in enumerate(values["stop"]):
        _check(f"stop[{i}]", item, LIMITS["stop.item"], LIMITS["stop.item"].high)
    if not values["query"].strip():
        raise InvalidRequest("'query' must not be blank", "query")
    values["history"] = tuple(values["history"])
    values["stop"] = tuple(values["stop"])
    values["temperature"], values["top_p"] = float(values["temperature"]), float(values["top_p"])
    values["min_p"], values["repeat_penalty"] = float(values["min_p"]), float(values["repeat_penalty"])
    return RespondRequest(**values)
