"""The one table of request fields every dialect shares: types and limits.

A dialect's validator (respond_schema.py, openai/schema.py, ...) reads its JSON
field by field through `check`, taking the limit from LIMITS under the engine's
name for the field and naming the field in errors as its users wrote it
(`history[0].content` on /api/respond, `messages[2].content` on /v1). What a field
left out gets is the dialect's default (server/http/defaults.py). What comes
out is one engine Request (server/engine/request.py), built by `sampling`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.engine.request import SamplingParams
from server.errors import InvalidRequest
from server.model.schema_check import SchemaError, check_schema


@dataclass(frozen=True)
class Limit:
    kind: type | tuple[type, ...]
    low: float | None = None
    high: float | None = None  # for str: max length; for list: max items
    required: bool = False


# The whole contract, by the engine's names. `None` as high for max_tokens means the settings' ceiling.
LIMITS: dict[str, Limit] = {
    "query": Limit(str, 1, 32_000, required=True),
    "system": Limit(str, 0, 8_000),
    "history": Limit(list, 0, 64),
    "content": Limit(str, 0, 32_000),
    "max_tokens": Limit(int, 1, None),
    "temperature": Limit((int, float), 0.0, 2.0),
    "top_p": Limit((int, float), 0.0, 1.0),
    "top_k": Limit(int, 0, 1000),
    "min_p": Limit((int, float), 0.0, 1.0),
    "repeat_penalty": Limit((int, float), 0.5, 2.0),
    "presence_penalty": Limit((int, float), -2.0, 2.0),
    "frequency_penalty": Limit((int, float), -2.0, 2.0),
    "logit_bias": Limit(dict, 0, 1024),  # token id (a string, as JSON keys are) -> bias
    "logit_bias.item": Limit((int, float), -100.0, 100.0),
    "seed": Limit(int, 0, 2**32 - 1),
    "stop": Limit(list, 0, 4),
    "stop.item": Limit(str, 1, 64),
    "stream": Limit(bool),
    "format": Limit((str, dict)),  # "json" or a JSON Schema
    "grammar": Limit(str, 1, 32_000),  # GBNF
    "ignore_eos": Limit(bool),
    "model": Limit(str, 0, 256),
    "keep_alive": Limit((str, int, float)),  # Ollama's: "5m", seconds, 0 (unload when idle), negative (forever)
    # Embeddings and reranking (server/http/retrieval/embeddings.py, rerank.py). The most inputs: the settings'
    # EMBED_MAX_INPUTS; how long each may be: the model's context (cut, or refused with truncate false).
    "input": Limit((str, list), 0, None),
    "encoding_format": Limit(str, 1, 16),
    "dimensions": Limit(int, 1, None),  # at most the model's vector size
    "truncate": Limit(bool),
    "embd_normalize": Limit(int, -1, 64),  # llama.cpp's: -1 none, 0 max-abs int16, 1 taxicab, 2 euclidean, p
    "user": Limit(str, 0, 256),
    "options": Limit(dict, 0, 64),
    "documents": Limit(list, 1, None),
    "documents.item": Limit((str, dict)),  # a text, or {"text": ...} (Jina, Cohere)
    "top_n": Limit(int, 1, None),
    "return_documents": Limit(bool),
}

# The sampling defaults, one set per dialect, are in server/http/defaults.py.
SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "repeat_last_n", "seed", "ignore_eos")
FLOATS = ("temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")
_NAMES = {int: "an integer", float: "a number", str: "a string", list: "an array", dict: "an object", bool: "a boolean"}


def check(name: str, value: Any, limit: Limit, high: float | None = None) -> None:
    """Raise InvalidRequest naming `name` unless `value` has the limit's type and range."""
    high = limit.high if high is None else high
    kinds = limit.kind if isinstance(limit.kind, tuple) else (limit.kind,)
    # JSON true/false arrive as bool, which Python also counts as int: refuse them for numbers.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(dict.fromkeys(_NAMES[float if k is int and float in kinds else k] for k in kinds))
        raise InvalidRequest(f"'{name}' must be {names}", name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a finite number", name)
    if isinstance(value, bool):
        return
    if isinstance(value, dict):
        if high is not None and len(value) > high:
            raise InvalidRequest(f"'{name}' must have at most {high} entries", name)
        return
    size: Any = len(value) if isinstance(value, (str, list)) else value
    what = "at least length" if isinstance(value, (str, list)) else "at least"
    if limit.low is not None and size < limit.low:
        raise InvalidRequest(f"'{name}' must be {what} {limit.low}", name)
    if high is not None and size > high:
        raise InvalidRequest(f"'{name}' must be {what.replace('at least', 'at most')} {high}", name)


def check_body(body: Any, fields: Mapping[str, Limit], highs: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Refuse a body that is not a JSON object, names a field not in `fields`, lacks a required one,
    or holds a value outside its limit (`highs` overrides a limit's high, e.g. the settings' ceiling);
    return the fields given. A field sent as null counts as not sent."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - set(fields))
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}'", unknown[0])
    given = {}
    for name, limit in fields.items():
        if body.get(name) is None:
            if limit.required:
                raise InvalidRequest(f"'{name}' is required", name)
            continue
        check(name, body[name], limit, (highs or {}).get(name))
        given[name] = body[name]
    return given


def check_stop(values: dict[str, Any], name: str = "stop") -> None:
    for i, item in enumerate(values["stop"]):
        check(f"{name}[{i}]", item, LIMITS["stop.item"])


def check_logit_bias(values: dict[str, Any], name: str = "logit_bias") -> None:
    """Keys are token ids written as decimal strings (JSON object keys are strings); whether an
    id exists in the vocabulary is the engine's to say."""
    for key, bias in values["logit_bias"].items():
        if not (isinstance(key, str) and key.isdigit() and len(key) <= 9):
            raise InvalidRequest(f"'{name}' keys must be token ids (non-negative integers), not '{key[:20]}'", name)
        check(f"{name}.{key}", bias, LIMITS["logit_bias.item"])


def check_json_schema(schema: Any, where: str) -> None:
    """A JSON Schema the answer must match, checked here (plain Python) so that an error names
    the keyword under the dialect's field: `format.properties.tags.uniqueItems`."""
    try:
        check_schema(schema)
    except SchemaError as exc:
        field = f"{where}.{exc.path}" if exc.path and not exc.path.startswith("[") else where + exc.path
        raise InvalidRequest(f"'{field}': {exc.message}", field) from None


def sampling(values: dict[str, Any]) -> SamplingParams:
    """The sampling part of a request from checked values (the dialect's defaults filled in, max_tokens set)."""
    floats = {k: float(values[k]) for k in FLOATS}
    bias = {int(k): float(v) for k, v in values["logit_bias"].items()}
    return SamplingParams(
        **{**{k: values[k] for k in SAMPLING}, **floats},
        logit_bias=tuple(sorted(bias.items())),
        max_tokens=values["max_tokens"],
        stop=tuple(values["stop"]),
    )


def sampling_problem(name: str, value: Any) -> str | None:
    """What is wrong with a sampling default a model's preset gives (None when fine)."""
    try:
        check(name, value, LIMITS[name])
    except InvalidRequest as exc:
        return exc.message
    return None
