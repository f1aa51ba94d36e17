"""How deep a JSON text nests, counted without parsing it: parsers and writers recurse once per level.

Python's json module recurses once per array or object, up to the interpreter's limit: a
text nested some thousands deep is a RecursionError, not a ValueError. Whoever parses JSON
a user wrote (a request body, a tool call's arguments in a message) asks `deeper_than`
first. Brackets inside strings do not count; the count is a loop over the text.
"""

from __future__ import annotations

import re

# A JSON string: quotes around anything but quotes and backslashes, or escapes (unrolled, so no backtracking).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def deeper_than(text: str, limit: int) -> bool:
    """Whether arrays and objects in `text` nest more than `limit` deep."""
    depth = 0
    for bracket in _NOT_BRACKET.sub("", _STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False
