"""The one JSON body reader of every dialect: `json_body()`.

Every route that takes a JSON body (/api/respond, /v1/*, and any dialect added
later) reads it with `json_body()` and nothing else, so each of them refuses the
same odd input the same way, with a 4xx and never a 5xx:

- more than MAX_BODY_BYTES, with a Content-Length or chunked -> 413 (read with a
  limit here: Werkzeug's own limit silently cuts a chunked body short);
- not UTF-8, not JSON, `NaN`/`Infinity` (not JSON, though Python reads them),
  nesting deeper than MAX_DEPTH (checked before parsing, so the parser's
  recursion cannot run out), integers of more than MAX_INT_DIGITS digits -> 400;
- strings that are not valid Unicode (a lone surrogate written as "\\ud800") ->
  400 naming the field as the user wrote it (`messages[2].content`).
- a body whose framing is broken (a chunk size that is not hexadecimal, ...) -> 400,
  raised by the body itself while it is read, and the connection closes after the
  answer (server/http/framed_body.py).

The name `json_body` is stable: dialects import it. That the body is declared
application/json is checked before any route runs (server/http/guard.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from server.errors import InvalidRequest
from server.model.jsondepth import deeper_than

MAX_DEPTH = 32  # arrays/objects inside each other; our bodies need 4 (messages[].content[].text)
MAX_INT_DIGITS = 32  # no field takes more than 2**64; Python refuses past 4300 digits with a ValueError
_CHUNK = 64 * 1024
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_body() -> Any:
    """The request's JSON body, parsed and checked as the module docstring says."""
    raw = read_body(current_app.config["MAX_CONTENT_LENGTH"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"the body must be UTF-8 (byte {exc.start} is not)") from None
    check_depth(text)
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_int=_int)
    except InvalidRequest:
        raise
    except (ValueError, RecursionError) as exc:
        where = f": {exc.msg} at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise InvalidRequest(f"the body must be valid JSON{where}") from None
    check_strings(value, "")
    return value


def read_body(limit: int) -> bytes:
    """At most `limit` bytes of body, whether sized by Content-Length or chunked; 413 past it."""
    environ = request.environ
    length = request.content_length
    if length is not None and length > limit:
        raise RequestEntityTooLarge()
    if length is None and "wsgi.input_terminated" not in environ:
        return b""  # a server that cannot say where a chunked body ends: read none (as Werkzeug does)
    stream = environ["wsgi.input"]
    # With a length, never read past it (the next request may follow); without, one byte past the limit tells.
    remaining = length if length is not None else limit + 1
    chunks, size = [], 0
    while remaining > 0:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        remaining -= len(chunk)
        if size > limit:
            raise RequestEntityTooLarge()
    return b"".join(chunks)


def check_depth(text: str) -> None:
    """400 when arrays and objects nest deeper than MAX_DEPTH (strings skipped: brackets in them count not)."""
    if deeper_than(text, MAX_DEPTH):
        raise InvalidRequest(f"the body nests arrays and objects more than {MAX_DEPTH} deep")


def check_strings(value: Any, where: str) -> None:
    """400 naming the field when a string (or an object's key) is not valid Unicode.

    JSON may escape half of a UTF-16 surrogate pair ("\\ud800"); Python keeps it, and it
    cannot be encoded to UTF-8 later. Recursion is bounded: check_depth ran first."""
    if isinstance(value, str):
        if not value.isascii() and _SURROGATE.search(value):
            raise InvalidRequest(f"'{where or 'body'}' is not valid Unicode (a lone surrogate escape)", where or None)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            name = f"{where}.{key}" if where else key
            if not key.isascii() and _SURROGATE.search(key):
                raise InvalidRequest(f"a key in '{where or 'body'}' is not valid Unicode", where or None)
            check_strings(item, name)


def _no_constant(name: str):
    raise InvalidRequest(f"the body must be valid JSON: {name} is not a JSON number")


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidRequest(f"the body has an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)
