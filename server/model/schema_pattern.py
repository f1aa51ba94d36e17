"""Which JSON Schema `pattern`s a grammar enforces exactly: a small regular-expression subset.

llama-cpp-python's converter turns a pattern into grammar rules by a translation that
trusts its input: `^(ab$` comes out as if the group were closed, a `]` or `}` outside a
class or a count makes it loop forever, `^a|b$` loses the quotes around the string, and
`a**` or `[]` make rules llama.cpp refuses. So `check_pattern` accepts only this subset,
which it translates faithfully (tests/server/test_schema_pattern.py compares the grammar
with Python's `re` on random patterns and strings), and names what it refuses:

    pattern      ^ alternatives $        (a top-level | is fine: the grammar groups it)
    alternatives sequence ( | sequence )*, no sequence empty unless it is the only one
    sequence     ( atom quantifier? )*
    atom         a character; ( alternatives ), not (?...); [ class ], not [^...]
    class        characters and ranges a-b (a <= b), not empty, no "[" inside
    quantifier   * + ? {n} {n,} {n,m}, n <= m <= MAX_REPEAT, one per atom; * + {n,} not on
                 a group that can match the empty string

Every character must be one a JSON string may hold raw (no quote, backslash or control
character, in a range either): the grammar writes the answer's characters as they are.
'.', '[^' and escapes are refused, as they would match those too. The walk is a loop;
groups nest at most MAX_GROUP_DEPTH deep (the converter recurses once per group). A group
that can match nothing may not be repeated without bound ('(a?)*'): llama.cpp refuses the
rule it makes, which recurses without consuming anything.
"""

from __future__ import annotations

import re

MAX_GROUP_DEPTH = 16
# Counts of {n,m}: each optional repetition nests one group deeper in the grammar, and
# llama.cpp's grammar check allows 256 (server/engine/constraints/grammar.py).
MAX_REPEAT = 200
_QUANTIFIER = re.compile(r"\{(\d{1,4})(,(\d{0,4}))?\}")
_HINTS = {".": " (list the characters instead)", "[^": " (list the characters instead)", "\\": ""}


class PatternError(ValueError):
    """Why a pattern is refused (the caller adds where it is)."""


def check_pattern(pattern: str) -> None:
    """Raise PatternError unless `pattern` is in the subset the module docstring describes."""
    if not (len(pattern) >= 2 and pattern.startswith("^") and pattern.endswith("$")):
        raise PatternError("'pattern' must be anchored: '^...$'")
    for bad, hint in _HINTS.items():
        if bad in pattern:
            raise PatternError(f"'pattern' may not use '{bad}'{hint}")
    body = pattern[1:-1]
    for c in body:
        _check_char(c)
    _check_structure(body)


def _check_char(c: str) -> None:
    if c == '"' or c in "^$" or ord(c) < 0x20 or ord(c) == 0x7F:
        shown = repr(c) if ord(c) < 0x20 or ord(c) == 0x7F else f"'{c}'"
        where = "a JSON string cannot hold it raw" if c not in "^$" else "anchors go only at the ends"
        raise PatternError(f"'pattern' may not use {shown} inside ({where})")


def _check_structure(body: str) -> None:
    # Per open group (and the top): [an alternative so far can match "", the current one can,
    # the group has a '|']. `item`: whether the last atom (with its quantifier) can match "",
    # None once folded into its alternative; `can_repeat`: an atom without a quantifier is last.
    groups, i = [[False, True, False]], 0
    item: bool | None = None
    can_repeat, empty = False, True  # empty: the current alternative has no atom yet
    while i < len(body):
        c = body[i]
        if c in "*+?{":
            if not can_repeat or item is None:
                raise PatternError(f"'pattern' has '{c}' with nothing (or a quantifier) before it to repeat")
            i, low, unbounded = _quantifier(body, i)
            if unbounded and item:  # llama.cpp refuses the rule: it recurses without consuming
                raise PatternError(f"'pattern' repeats without bound a group that can match nothing ('{c}')")
            item, can_repeat = item or low == 0, False
            continue
        if item is not None:  # fold the last item into its alternative
            groups[-1][1] = groups[-1][1] and item
            item = None
        if c == "(":
            if body.startswith("(?", i):
                raise PatternError("'pattern' may not use '(?' (groups are plain '( )')")
            if len(groups) > MAX_GROUP_DEPTH:
                raise PatternError(f"'pattern' nests groups more than {MAX_GROUP_DEPTH} deep")
            groups.append([False, True, False])
            can_repeat, empty, i = False, True, i + 1
        elif c == ")":
            if len(groups) == 1:
                raise PatternError("'pattern' has a ')' without its '('")
            if empty:
                raise PatternError("'pattern' has an empty group or alternative (use '?' for an optional part)")
            some, current, _ = groups.pop()
            item, can_repeat, empty, i = some or current, True, False, i + 1
        elif c == "|":
            if empty:
                raise PatternError("'pattern' has an empty alternative (use '?' for an optional part)")
            groups[-1] = [groups[-1][0] or groups[-1][1], True, True]
            can_repeat, empty, i = False, True, i + 1
        elif c in "]}":
            raise PatternError(f"'pattern' has a '{c}' without its opening bracket")
        else:
            i = _class_end(body, i) if c == "[" else i + 1
            item, can_repeat, empty = False, True, False
    if len(groups) > 1:
        raise PatternError("'pattern' has a '(' without its ')'")
    if empty and groups[0][2]:
        raise PatternError("'pattern' has an empty alternative (use '?' for an optional part)")


def _quantifier(body: str, i: int) -> tuple[int, int, bool]:
    """(end, least count, whether unbounded) of the quantifier at body[i], checked."""
    if body[i] != "{":
        return i + 1, 0 if body[i] in "*?" else 1, body[i] != "?"
    match = _QUANTIFIER.match(body, i)
    if match is None:
        raise PatternError("'pattern' has a '{' that is not a count {n}, {n,} or {n,m}")
    low = int(match.group(1))
    high = low if match.group(2) is None else int(match.group(3)) if match.group(3) else None
    if low > MAX_REPEAT or (high is not None and high > MAX_REPEAT):
        raise PatternError(f"'pattern' counts may be at most {MAX_REPEAT}")
    if high is not None and high < low:
        raise PatternError(f"'pattern' has the count {match.group(0)}, whose maximum is below its minimum")
    return match.end(), low, high is None


def _class_end(body: str, i: int) -> int:
    """Past the class that starts at body[i] ('['), checked."""
    end = body.find("]", i + 1)
    if end < 0:
        raise PatternError("'pattern' has a '[' without its ']'")
    inside = body[i + 1 : end]
    if not inside:
        raise PatternError("'pattern' has an empty class '[]'")
    if "[" in inside:  # a nested set in some regex dialects (Python warns), a character in others
        raise PatternError("'pattern' has a '[' inside a class")
    j = 0
    while j < len(inside):
        if j + 2 < len(inside) and inside[j + 1] == "-":  # a range; '-' first or last is itself
            low, high = inside[j], inside[j + 2]
            if low > high:
                raise PatternError(f"'pattern' has the range {low}-{high}, which is backwards")
            if any(low <= c <= high for c in '"\\\x7f') or low < " ":
                raise PatternError(f"'pattern' has the range {low}-{high}, which holds a quote, a backslash or DEL")
            j += 3
        else:
            j += 1
    return end + 1
