"""GBNF for the JSON numbers inside a range: what a schema's minimum/maximum become.

No schema converter we know enforces numeric bounds (llama-cpp-python's ignores them
for integers and numbers alike), yet a range of decimal numerals is a regular
language, so a grammar can hold it exactly. A bounded number is written without an
exponent, as `-`? integer part (no leading zeros) and an optional fraction of at most
digits such that the numeral has at most MAX_SIGNIFICANT significant digits; an integer is the same
with no fraction. Bounds are compared as
exact decimals (a float bound is taken as the shortest decimal that reads back as it).

The integer part is split by digit count and then digit by digit (the classic
numeric-range construction); the fraction is a small automaton over its digits whose
states are "which suffix of each bound must still be respected", shared as named rules.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Callable

MAX_INTEGER_DIGITS = 16  # as the converter's unbounded integer-part rule
# Significant digits of a bounded number. Two different decimals of at most 15 significant digits
# are different doubles (DBL_DIG), and rounding is monotonic, so a numeral inside the bounds as a
# decimal is inside them once a JSON parser has read it as a float: 0.9999999999999999999 would be 1.0.
MAX_SIGNIFICANT = 15

AddRule = Callable[[str, str], str]  # (name, body) -> the name it was given
_State = tuple[str | None, bool, str | None, bool, int]  # a fraction state: (lo, lo_incl, hi, hi_incl, depth)


class RangeError(ValueError):
    """No number is in the range, or a bound cannot be written within the digit limits."""


def as_decimal(value: int | float) -> Decimal:
    return Decimal(value) if isinstance(value, int) else Decimal(repr(float(value)))


def number_range(
    lo: Decimal | None, lo_incl: bool, hi: Decimal | None, hi_incl: bool, integer: bool, add_rule: AddRule, name: str
) -> str:
    """A GBNF expression for the numerals x with lo <(=) x <(=) hi (None: unbounded)."""
    if integer:  # integer bounds, inclusive: [2.5, 7) is 3..6
        if lo is not None:
            lo, lo_incl = (_ceil(lo) if lo_incl else _floor(lo) + 1), True
        if hi is not None:
            hi, hi_incl = (_floor(hi) if hi_incl else _ceil(hi) - 1), True
    if lo is not None and hi is not None and (lo > hi or (lo == hi and not (lo_incl and hi_incl))):
        raise RangeError("no " + ("integer" if integer else "number") + " lies between the bounds")
    fraction = _Fraction(not integer, add_rule, name)
    alts = []
    if lo is None or lo < 0:  # negative numerals: "-" and a magnitude
        if hi is not None and hi <= 0:
            m_lo, m_lo_incl = -hi, hi_incl
        else:
            m_lo, m_lo_incl = Decimal(0), False  # zero is written without a sign
        body = _magnitude(m_lo, m_lo_incl, None if lo is None else -lo, lo_incl, fraction)
        if body:
            alts.append(f'"-" ({body})')
    if hi is None or hi > 0 or (hi == 0 and hi_incl):
        if lo is not None and lo >= 0:
            m_lo, m_lo_incl = lo, lo_incl
        else:
            m_lo, m_lo_incl = Decimal(0), True
        body = _magnitude(m_lo, m_lo_incl, hi, hi_incl, fraction)
        if body:
            alts.append(body)
    if not alts:
        raise RangeError("no " + ("integer" if integer else "number") + " lies between the bounds")
    return "(" + " | ".join(alts) + ")"


def _floor(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=ROUND_FLOOR)


def _ceil(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=ROUND_CEILING)


def _split(x: Decimal) -> tuple[int, str]:
    """Integer part and fraction digits (trailing zeros dropped) of x >= 0."""
    whole = int(x)
    digits = format(x - whole, "f").partition(".")[2].rstrip("0")
    return whole, digits


def _magnitude(a: Decimal, a_incl: bool, b: Decimal | None, b_incl: bool, fraction: "_Fraction") -> str:
    """Numerals x >= 0 (no sign) with a <(=) x <(=) b; "" when there are none."""
    whole_a, frac_a = _split(a)
    whole_b, frac_b = _split(b) if b is not None else (None, None)
    if whole_a == whole_b:
        tail = fraction.expr(whole_a, frac_a, a_incl, frac_b, b_incl)
        return "" if tail is None else f'"{whole_a}"{tail}'
    parts = [(f'"{whole_a}"', fraction.expr(whole_a, frac_a, a_incl, None, True))]
    middle_top = None if whole_b is None else whole_b - 1
    for first, expr in _uint_range(whole_a + 1, middle_top):  # any fraction: one bucket per digit count
        parts.append((expr, fraction.expr(first, None, True, None, True)))
    if whole_b is not None:
        parts.append((f'"{whole_b}"', fraction.expr(whole_b, None, True, frac_b, b_incl)))
    return " | ".join(part + tail for part, tail in parts if tail is not None)


class _Fraction:
    """The digits after the point: digit strings f compared with a bound's digits as decimals
    (f = "" is a numeral without a fraction, worth 0). Each state is a named rule."""

    def __init__(self, allowed: bool, add_rule: AddRule, name: str) -> None:
        self.allowed, self.add_rule, self.name = allowed, add_rule, name
        self._rules: dict[_State, str | None] = {}

    def expr(self, whole: int, lo: str | None, lo_incl: bool, hi: str | None, hi_incl: bool) -> str | None:
        """What follows the integer part `whole` ("" for nothing); None when no fraction fits."""
        depth = (MAX_SIGNIFICANT - (len(str(whole)) if whole else 0)) if self.allowed else 0
        empty, digits = self._state(lo, lo_incl, hi, hi_incl, max(depth, 0))
        if digits is None:
            return "" if empty else None
        return f' ("." {digits})?' if empty else f' "." {digits}'

    def _state(
        self, lo: str | None, lo_incl: bool, hi: str | None, hi_incl: bool, depth: int
    ) -> tuple[bool, str | None]:
        """(whether f = "" fits, a rule for the non-empty f that fit, or None)."""
        empty = (lo is None or (lo == "" and lo_incl)) and (hi != "" or hi_incl)
        if depth == 0:
            return empty, None
        if lo is None and hi is None:
            return empty, f"[0-9]{{1,{depth}}}"
        key = (lo, lo_incl, hi, hi_incl, depth)
        if key not in self._rules:
            self._rules[key] = self._digits(lo, lo_incl, hi, hi_incl, depth)
        return empty, self._rules[key]

    def _digits(self, lo: str | None, lo_incl: bool, hi: str | None, hi_incl: bool, depth: int) -> str | None:
        """A rule for the non-empty fractions: digits grouped by the state they lead to."""
        groups: dict[tuple[str | None, bool, str | None, bool], list[int]] = {}
        for d in range(10):
            after = _step(lo, lo_incl, d) + _step(hi, hi_incl, d, upper=True)
            if after[0] != _DEAD[0] and after[2] != _DEAD[0]:
                groups.setdefault(after, []).append(d)
        alts = []
        for (n_lo, n_lo_incl, n_hi, n_hi_incl), ds in groups.items():
            empty, rest = self._state(n_lo, n_lo_incl, n_hi, n_hi_incl, depth - 1)
            head = _digit_class(ds)
            if rest is None:
                if empty:
                    alts.append(head)
            else:
                alts.append(f"{head} ({rest})?" if empty else f"{head} {rest}")
        return self.add_rule(f"{self.name}-fraction", " | ".join(alts)) if alts else None


_DEAD = ("dead", False)


def _step(bound: str | None, incl: bool, d: int, upper: bool = False) -> tuple[str | None, bool]:
    """After digit d: what the rest of f must respect of one bound; _DEAD when d breaks it.
    A bound None is no bound; "" is the value 0 (what a fraction's rest is compared with)."""
    if bound is None:
        return None, True
    if bound == "":
        if not upper:  # f >= 0 always holds; f > 0 holds once a digit is not 0
            return (None, True) if incl or d > 0 else ("", False)
        return ("", True) if incl and d == 0 else _DEAD  # f <= 0: only zeros; f < 0: never
    b = int(bound[0])
    if (d > b) != upper and d != b:
        return None, True  # strictly inside on this side: no constraint left
    if d == b:
        return bound[1:], incl
    return _DEAD


def _digit_class(ds: list[int]) -> str:
    if len(ds) == 1:
        return f'"{ds[0]}"'
    if ds == list(range(ds[0], ds[-1] + 1)):
        return f"[{ds[0]}-{ds[-1]}]"
    return "[" + "".join(map(str, ds)) + "]"


def _uint_range(lo: int, hi: int | None) -> list[tuple[int, str]]:
    """Integers lo..hi (hi None: up to the digit limit) without leading zeros, as GBNF: one
    (smallest member, expression) per digit count; [] when there are none."""
    top = hi if hi is not None else 10 ** max(MAX_INTEGER_DIGITS, len(str(lo))) - 1
    buckets = []
    for n in range(len(str(lo)), len(str(top)) + 1):
        a, b = max(lo, 10 ** (n - 1) if n > 1 else 0), min(top, 10**n - 1)
        if a <= b:
            buckets.append((a, _same_length(str(a), str(b))))
    return buckets


def _same_length(a: str, b: str) -> str:
    """Digit strings s of one length with a <= s <= b."""
    if a == b:
        return f'"{a}"'
    i = next(k for k in range(len(a)) if a[k] != b[k])
    prefix, rest = (f'"{a[:i]}" ' if i else ""), len(a) - i - 1
    lo_d, hi_d = int(a[i]), int(b[i])
    alts = []
    low_all, high_all = set(a[i + 1 :]) <= {"0"}, set(b[i + 1 :]) <= {"9"}
    first = lo_d if low_all else lo_d + 1
    last = hi_d if high_all else hi_d - 1
    if not low_all:
        alts.append(f'"{lo_d}" {_ge(a[i + 1 :])}')
    if first <= last:
        alts.append(_digit_class(list(range(first, last + 1))) + (f" [0-9]{{{rest}}}" if rest else ""))
    if not high_all:
        alts.append(f'"{hi_d}" {_le(b[i + 1 :])}')
    return prefix + "(" + " | ".join(alts) + ")"


def _ge(s: str) -> str:
    """Digit strings of len(s) that are >= s."""
    if set(s) <= {"0"}:
        return f"[0-9]{{{len(s)}}}"
    head, rest = int(s[0]), len(s) - 1
    alts = [f'"{head}" {_ge(s[1:])}' if rest else f'"{head}"']
    if head < 9:
        alts.append(_digit_class(list(range(head + 1, 10))) + (f" [0-9]{{{rest}}}" if rest else ""))
    return "(" + " | ".join(alts) + ")"


def _le(s: str) -> str:
    """Digit strings of len(s) that are <= s."""
    if set(s) <= {"9"}:
        return f"[0-9]{{{len(s)}}}"
    head, rest = int(s[0]), len(s) - 1
    alts = [f'"{head}" {_le(s[1:])}' if rest else f'"{head}"']
    if head > 0:
        alts.append(_digit_class(list(range(0, head))) + (f" [0-9]{{{rest}}}" if rest else ""))
    return "(" + " | ".join(alts) + ")"
