"""The speculative decoding bench's verdicts: tokens/s spread, per-round speed-ups, identical texts, the table.

Works on the rows bench/speculative.py records per (round, clients, server): tokens_per_s, completion_tokens,
drafted / accepted and the answer texts per prompt. The arithmetic is bench/_spread.py's.
"""

from __future__ import annotations

import _spread

# (numerator, denominator): each is a per-round speed-up or comparison worth reporting.
MODES = ("ngram", "draft-self", "draft")  # each side's speculative mode, after "ours-" / "llama-server-"
PAIRS = [
    *((f"ours-{m}", "ours-off") for m in MODES),
    *((f"llama-server-{m}", "llama-server-off") for m in MODES),
    ("ours-off", "llama-server-off"),
    *((f"ours-{m}", f"llama-server-{m}") for m in MODES),
]
# ours-ngram / ours-off, by prompt set and clients (issue #23): a gain where answers copy their prompt,
# no loss where they copy nothing.
GOALS = {"edit": {1: 1.3, 4: 1.0}, "free": {1: 0.98, 4: 0.98}}


def _by(raw: list[dict], clients: int) -> dict[tuple[str, int], dict]:
    return {(r["server"], r["round"]): r for r in raw if r["clients"] == clients and not r["errors"]}


def ratios(raw: list[dict], a: str, b: str, clients: int) -> list[float]:
    """tokens/s of a over b, one per round in which both ran without errors."""
    rows = _by(raw, clients)
    return [
        rows[(a, r)]["tokens_per_s"] / rows[(b, r)]["tokens_per_s"]
        for (s, r) in sorted(rows)
        if s == a and (b, r) in rows
    ]


def speedup_vs_llama(raw: list[dict], clients: int, mode: str = "ngram") -> list[float]:
    """Per round: our speed-up from `mode` divided by llama-server's (> 1: ours gains more)."""
    rows = _by(raw, clients)
    out = []
    names = (f"ours-{mode}", "ours-off", f"llama-server-{mode}", "llama-server-off")
    for s, r in sorted(rows):
        if s == names[0] and all((n, r) in rows for n in names):
            on, off, lon, loff = (rows[(n, r)]["tokens_per_s"] for n in names)
            out.append((on / off) / (lon / loff))
    return out


def identical(raw: list[dict], a: str, b: str) -> dict:
    """Per prompt: in how many (round, clients) runs a's text equals b's byte for byte."""
    rows = {(r["server"], r["round"], r["clients"]): r for r in raw}
    out: dict[str, dict] = {}
    for (s, rnd, c), row in sorted(rows.items()):
        other = rows.get((b, rnd, c))
        if s != a or other is None:
            continue
        for p, text in row["texts"].items():
            if p in other["texts"]:
                d = out.setdefault(p, {"runs": 0, "identical": 0, "by_clients": {}})
                same = text == other["texts"][p]
                d["runs"] += 1
                d["identical"] += same
                bc = d["by_clients"].setdefault(str(c), [0, 0])
                bc[0] += same
                bc[1] += 1
    return out


def per_kind(runs: list[dict]) -> dict[str, dict[str, int]]:
    """Our server's counters per kind of guess, summed over a side's passes (see speculative.py)."""
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        for kind, fields in (run.get("per_kind") or {}).items():
            total = out.setdefault(kind, {})
            for field, value in fields.items():
                total[field] = total.get(field, 0) + value
    return dict(sorted(out.items()))


def summarize(raw: list[dict], names: list[str], clients: list[int], prompts: str = "edit") -> dict:
    servers = []
    for name in names:
        for c in clients:
            runs = [r for r in raw if r["server"] == name and r["clients"] == c]
            drafted = sum(r["drafted"] for r in runs)
            servers.append(
                {
                    "server": name,
                    "clients": c,
                    "rounds": len(runs),
                    "errors": sum(r["errors"] for r in runs),
                    "tokens_per_s": _spread.spread((r["tokens_per_s"] for r in runs), 2),
                    "completion_tokens_seen": sorted({r["completion_tokens"] for r in runs}),
                    "drafted": drafted,
                    "accepted": sum(r["accepted"] for r in runs),
                    "acceptance": round(sum(r["accepted"] for r in runs) / drafted, 3) if drafted else None,
                    "per_kind": per_kind(runs),
                }
            )
    claims = {}
    for c in clients:
        claims[str(c)] = {
            f"{a}/{b}": _spread.claim(ratios(raw, a, b, c), a, b) for a, b in PAIRS if a in names and b in names
        }
        for m in MODES:
            if all(n in names for n in (f"ours-{m}", "ours-off", f"llama-server-{m}", "llama-server-off")):
                key = "our speed-up / llama-server's" + ("" if m == "ngram" else f" ({m})")
                claims[str(c)][key] = _spread.claim(speedup_vs_llama(raw, c, m), f"our {m} speed-up", "llama-server's")
    goals = {}
    for c, goal in GOALS[prompts].items():
        med = claims.get(str(c), {}).get("ours-ngram/ours-off", {}).get("median")
        if med is not None:
            goals[str(c)] = {"goal": goal, "median": med, "met": med >= goal}
    return {
        "servers": servers,
        "ratios": claims,
        "goals_ours_ngram_over_off": goals,
        "identical_text": {
            f"{side}-{m} vs {side}-off": identical(raw, f"{side}-{m}", f"{side}-off")
            for side in ("ours", "llama-server")
            for m in MODES
            if f"{side}-{m}" in names and f"{side}-off" in names
        },
    }


def _cell(s: dict | None, digits: int) -> str:
    if not s or s.get("median") is None:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def print_summary(summary: dict, clients: list[int]) -> None:
    w = 26
    print("\ntokens/s of generated tokens: median [min-max] over rounds; acceptance = accepted / drafted")
    print(f"{'':40}" + "".join(f"{str(c) + ' clients':>{w}}" for c in clients) + "   acceptance")
    for name in dict.fromkeys(s["server"] for s in summary["servers"]):
        rows = {s["clients"]: s for s in summary["servers"] if s["server"] == name}
        acc = " ".join(str(rows[c]["acceptance"]) for c in clients if c in rows)
        print(f"{name:40}" + "".join(f"{_cell(rows[c]['tokens_per_s'], 1):>{w}}" for c in clients) + f"   {acc}")
    pairs = dict.fromkeys(p for c in clients for p in summary["ratios"].get(str(c), {}))
    for pair in pairs:
        cells = "".join(f"{_cell(summary['ratios'][str(c)].get(pair), 3):>{w}}" for c in clients)
        print(f"{pair[:40]:40}{cells}")
    print("\nwhat the per-round ratios support (95% interval of the median ratio):")
    for c in clients:
        for cl in summary["ratios"].get(str(c), {}).values():
            print(f"  {c} clients: {cl['text']}")
    for c, g in summary["goals_ours_ngram_over_off"].items():
        print(f"  goal at {c} clients: ours-ngram/ours-off >= {g['goal']}: median {g['median']} -> {g['met']}")
    kinds = [s for s in summary["servers"] if s.get("per_kind")]
    if kinds:
        print("\nper kind of guess, summed over rounds: offered / refused (probed) / drafts / tokens / kept")
        for s in kinds:
            for kind, f in s["per_kind"].items():
                print(
                    f"  {s['server']:16} {s['clients']} clients  {kind:10} {f.get('offered', 0):6} / "
                    f"{f.get('refused', 0):6} ({f.get('probes', 0)}) / {f.get('drafts', 0):5} / "
                    f"{f.get('tokens', 0):6} / {f.get('accepted', 0):6}"
                )
    print("\nbyte-identical answers with and without drafts (identical / runs, per prompt):")
    for pair, per in summary["identical_text"].items():
        cells = ", ".join(f"{p} {d['identical']}/{d['runs']}" for p, d in per.items())
        print(f"  {pair}: {cells or '-'}")
