"""How far a comparison benchmark's rounds can be trusted: equal work, spread, and what a ratio supports.

A comparison is only a comparison when both sides did the same work and the difference between them
is larger than the difference between two runs of the same side. This module holds the arithmetic the
comparison benches share:

  * `work_check` groups the rounds by (round, clients) and says whether every side produced the same
    completion tokens;
  * `spread` is min / median / max of a list of measurements;
  * `paired_ratios` takes a ratio per round: the sides of one round ran back to back (interleaved), so
    what drifts slowly (clocks, other load) falls on both and cancels in that round's ratio;
  * `median_ci` bounds the median with order statistics (no assumption about the distribution);
  * `claim` turns a ratio's rounds into a sentence that says only what they support: a side is faster
    when the 95% interval of the median ratio lies wholly above 1 (slower: below), otherwise no
    difference is shown, and the interval is the "within" of any parity statement.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

LEVEL = 0.95


def spread(values: Iterable[float], digits: int = 3) -> dict:
    """n, min, median and max of `values` (None for each when there are none)."""
    vals = sorted(v for v in values if v is not None and not math.isnan(v))
    if not vals:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {
        "n": len(vals),
        "min": round(vals[0], digits),
        "median": round(statistics.median(vals), digits),
        "max": round(vals[-1], digits),
    }


def median_ci(values: Iterable[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Distribution-free interval for the median: [x_(k), x_(n-k+1)] of the sorted values, with the
    largest k whose two-sided binomial tail 2 * P(Binom(n, 1/2) <= k-1) is at most 1 - level.
    None when there are too few values for that level (5 or fewer at 95%)."""
    vals = sorted(values)
    n = len(vals)
    k, tail = 0, 0.0
    while k < n // 2:
        tail += math.comb(n, k) / 2**n  # now P(B <= k)
        if 2 * tail > 1 - level:
            break
        k += 1
    return (vals[k - 1], vals[n - k]) if k >= 1 else None


def claim(ratios: list[float], a: str, b: str, level: float = LEVEL, unit: str = "rounds") -> dict:
    """What the per-round ratios a/b support, as numbers and one sentence (`unit`: what a ratio came from)."""
    s = spread(ratios)
    ci = median_ci(ratios, level)
    out = {**s, "ci_level": level, "ci": [round(ci[0], 3), round(ci[1], 3)] if ci else None}
    if ci is None:
        out.update(supported=None, text=f"{a}/{b}: {s['n']} {unit}, too few for a {level:.0%} interval")
        return out
    lo, hi = ci
    med = s["median"]
    every = f" (and in every one of the {s['n']} {unit})" if s["min"] > 1 or s["max"] < 1 else ""
    if lo > 1 or hi < 1:
        word = "faster" if lo > 1 else "slower"
        text = f"{a} {word} than {b}: median {med:.3f}x, {level:.0%} interval {lo:.3f}-{hi:.3f} excludes 1{every}"
        out.update(supported=word, text=text)
    else:
        text = (
            f"{a} vs {b}: no difference shown; median {med:.3f}x, {level:.0%} interval {lo:.3f}-{hi:.3f} "
            f"spans 1 (parity within {max(1 - lo, hi - 1):.1%})"
        )
        out.update(supported="parity", text=text)
    return out


def work_check(raw: list[dict]) -> list[dict]:
    """One record per (round, clients): each side's completion tokens, and whether all sides did
    the same work (`equal`: the same completion tokens, and no errors)."""
    groups: dict[tuple[int, int], dict] = {}
    for row in raw:
        g = groups.setdefault((row["round"], row["clients"]), {"tokens": {}, "errors": {}})
        g["tokens"][row["server"]] = row["completion_tokens"]
        g["errors"][row["server"]] = row["errors"]
    out = []
    for (r, c), g in sorted(groups.items()):
        equal = len(set(g["tokens"].values())) == 1 and not any(g["errors"].values())
        out.append({"round": r, "clients": c, "tokens": g["tokens"], "equal": equal})
    return out


def paired_ratios(raw: list[dict], a: str, b: str, clients: int) -> tuple[list[float], int]:
    """tokens/s of a over b, one per round in which both ran `clients` clients and did the same work
    (the same completion tokens, no errors); also how many rounds were left out for unequal work."""
    rows = {(r["server"], r["round"]): r for r in raw if r["clients"] == clients}
    both = sorted(rnd for (srv, rnd) in rows if srv == a and (b, rnd) in rows)
    ratios, left_out = [], 0
    for rnd in both:
        ra, rb = rows[(a, rnd)], rows[(b, rnd)]
        if ra["completion_tokens"] != rb["completion_tokens"] or ra["errors"] or rb["errors"] or not rb["tokens_per_s"]:
            left_out += 1
            continue
        ratios.append(ra["tokens_per_s"] / rb["tokens_per_s"])
    return ratios, left_out
