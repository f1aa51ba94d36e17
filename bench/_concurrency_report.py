"""The concurrency benchmark's verdicts: did the sides do equal work, what do the ratios support, the table.

Works on the rows bench/concurrency.py records per round (server, round, clients, completion_tokens,
tokens_per_s, errors, ...); the arithmetic is bench/_spread.py's.
"""

from __future__ import annotations

import _spread

# Ratios worth reporting, where both columns ran.
PAIRS = [
    ("ours-pN", "llama-server-pN"),
    ("ours-pN", "before-pN"),
    ("ours-pN", "ours-gthread-pN"),
    ("ours-pN", "llama-cpp-python"),
    ("decoder-pN", "llama-server-pN"),
    ("decoder-pN", "llama-cpp-python"),
    ("ours-pN", "ours-p1"),
    ("llama-server-pN", "llama-server-p1"),
]


def work_summary(raw: list[dict], ignoring: dict[str, bool], expected: dict[int, int] | None) -> dict:
    """Per (round, clients): did every side generate the same completion tokens? `ok` is the
    bench's assertion: every group equal, and, where end of sequence was ignored, every side that
    ignored it got exactly the tokens asked for (`expected`: clients -> tokens per round)."""
    checks = _spread.work_check(raw)
    short = [
        {k: r[k] for k in ("round", "clients", "server", "completion_tokens")}
        for r in raw
        if expected and ignoring.get(r["server"]) and r["completion_tokens"] != expected[r["clients"]]
    ]
    unequal = [c for c in checks if not c["equal"]]
    return {
        "ignore_eos": ignoring,
        "expected_tokens_per_round": expected,
        "groups": len(checks),
        "equal_groups": len(checks) - len(unequal),
        "unequal": unequal,
        "short_of_expected": short,
        "ok": not unequal and not short,
    }


def ratio_claims(raw: list[dict], names: list[str], clients: int) -> dict:
    """Each reported pair's per-round ratios at `clients`: spread, 95% interval, and the claim."""
    out = {}
    for a, b in PAIRS:
        if a in names and b in names:
            vals, left_out = _spread.paired_ratios(raw, a, b, clients)
            out[f"{a}/{b}"] = {**_spread.claim(vals, a, b), "rounds_left_out_unequal_work": left_out}
    return out


def _cell(s: dict, digits: int) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def print_table(rows: list[dict], claims: dict[int, dict], work: dict, clients: list[int]) -> None:
    w = 24
    rounds = max((r["rounds"] for r in rows), default=0)
    print(f"\naggregate tokens/s by concurrent clients: median [min-max] over {rounds} rounds")
    print(f"{'':24}" + "".join(f"{str(c) + ' clients':>{w}}" for c in clients))
    for name in dict.fromkeys(r["server"] for r in rows):
        cells = {r["clients"]: _cell(r["tokens_per_s_spread"], 1) for r in rows if r["server"] == name}
        print(f"{name:24}" + "".join(f"{cells.get(c, '-'):>{w}}" for c in clients))
    pairs = list(dict.fromkeys(p for c in clients for p in claims.get(c, {})))
    for pair in pairs:
        cells = {c: _cell(claims[c].get(pair), 3) for c in clients}
        print(f"{pair:24}" + "".join(f"{cells[c]:>{w}}" for c in clients))
    print("\nequal work: completion tokens per round, side by side")
    ign = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in work["ignore_eos"].items())
    print(f"  end of sequence ignored: {ign}")
    if work["expected_tokens_per_round"]:
        print(
            "  expected per round: "
            + ", ".join(f"{t} at {c} clients" for c, t in work["expected_tokens_per_round"].items())
        )
    print(
        f"  equal on every side in {work['equal_groups']} of {work['groups']} (round, clients) groups"
        + ("" if work["ok"] else f"; UNEQUAL: {work['unequal'][:4]} short: {work['short_of_expected'][:4]}")
    )
    print("\nwhat the per-round ratios support (95% interval of the median ratio):")
    for c in clients:
        for cl in claims.get(c, {}).values():
            left = cl["rounds_left_out_unequal_work"]
            print(f"  {c} clients: {cl['text']}" + (f" [{left} unequal rounds left out]" if left else ""))
