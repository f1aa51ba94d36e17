"""The comparison benches' arithmetic and equal-work check (bench/_spread.py, bench/_concurrency_report.py),
and one short real run of bench/concurrency.py on Gemma 3 270M.

The arithmetic decides which claims a results file supports, so it is checked on rows whose
answer is known; the real run checks that our server takes the ignore_eos field the bench sends
and that both sides then generate exactly the tokens asked for, which makes their work equal.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.append(str(BENCH))

import _concurrency_report as report  # noqa: E402
import _spread  # noqa: E402


def _row(server: str, rnd: int, tps: float, tokens: int = 384, clients: int = 1, errors: int = 0) -> dict:
    return {
        "server": server,
        "round": rnd,
        "clients": clients,
        "tokens_per_s": tps,
        "completion_tokens": tokens,
        "errors": errors,
    }


def test_spread_is_min_median_max():
    assert _spread.spread([3.0, 1.0, 2.0, 10.0]) == {"n": 4, "min": 1.0, "median": 2.5, "max": 10.0}
    assert _spread.spread([]) == {"n": 0, "min": None, "median": None, "max": None}


def test_median_interval_uses_the_binomial_order_statistics():
    # 15 values: P(Binom(15, .5) <= 3) = 0.0176, so [x(4), x(12)] covers the median with >= 95%;
    # P(<= 4) = 0.059 would be too little.
    assert _spread.median_ci(range(1, 16)) == (4, 12)
    assert _spread.median_ci(range(1, 7)) == (1, 6)  # 6 values: only min-max, at 96.9%
    assert _spread.median_ci(range(1, 6)) is None  # 5 values: even min-max is 93.8%
    coverage = 1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20
    lo, hi = _spread.median_ci(range(1, 21))
    assert (lo, hi) == (6, 15) and coverage >= 0.95


def test_claim_needs_the_interval_to_exclude_one():
    faster = _spread.claim([1.10 + 0.01 * i for i in range(15)], "a", "b")
    assert faster["supported"] == "faster" and faster["ci"] == [1.13, 1.21]
    assert "in every one of the 15 rounds" in faster["text"]
    # The same median with two bad rounds: still faster by the interval, not in every round.
    mixed = _spread.claim([0.9, 0.95] + [1.10 + 0.01 * i for i in range(13)], "a", "b")
    assert mixed["supported"] == "faster" and "every one" not in mixed["text"]
    # A 2x swing either way, as seen at 4 clients, supports nothing however good the median.
    swing = _spread.claim([0.6, 1.4] * 7 + [1.2], "a", "b")
    assert swing["supported"] == "parity" and "spans 1" in swing["text"]
    assert _spread.claim([0.5, 0.6, 0.7, 0.8, 0.9, 0.95], "a", "b")["supported"] == "slower"
    assert _spread.claim([1.2, 1.3], "a", "b")["supported"] is None


def test_ratios_are_paired_by_round_and_only_for_equal_work():
    raw = [
        _row("a", 0, 200),
        _row("b", 0, 100),
        _row("a", 1, 300, tokens=300),
        _row("b", 1, 100),  # a stopped early: not comparable
        _row("a", 2, 150),
        _row("b", 2, 100, errors=1),  # an error: not comparable
        _row("a", 3, 120),
        _row("b", 3, 100),
        _row("a", 3, 999, clients=4),
    ]
    ratios, left_out = _spread.paired_ratios(raw, "a", "b", clients=1)
    assert ratios == [2.0, 1.2] and left_out == 2


def test_work_summary_asserts_equal_and_full_tokens():
    expected = {1: 384}
    equal = [_row("a", 0, 1), _row("b", 0, 1)]
    assert report.work_summary(equal, {"a": True, "b": True}, expected)["ok"]
    unequal = [_row("a", 0, 1), _row("b", 0, 1, tokens=300)]
    bad = report.work_summary(unequal, {"a": True, "b": True}, expected)
    assert not bad["ok"] and bad["equal_groups"] == 0 and bad["short_of_expected"][0]["server"] == "b"
    # Equal but short of what was asked: a side that was to ignore end of sequence did not.
    both_short = [_row("a", 0, 1, tokens=300), _row("b", 0, 1, tokens=300)]
    assert not report.work_summary(both_short, {"a": True, "b": True}, expected)["ok"]
    # Answers allowed to end (--keep-eos): equal counts are all that is asked.
    assert report.work_summary(both_short, {"a": False, "b": False}, None)["ok"]


@pytest.mark.slow
def test_real_run_gives_every_side_the_same_tokens(gemma_gguf, tmp_path, capsys):
    """Our server (which must accept the ignore_eos field) and the in-process decoder each generate
    exactly the tokens asked for, and the bench says so. One thread: two would wait on each other at
    every barrier whenever the machine is busy."""
    import concurrency

    out = tmp_path / "equal.json"
    argv = [
        "--model",
        str(gemma_gguf),
        "--servers",
        "ours-pN,decoder-pN",
        "--parallel",
        "1",
        "--clients",
        "1",
        "--requests",
        "1",
        "--rounds",
        "1",
        "--max-tokens",
        "48",
        "--threads",
        "1",
        "--no-plot",
        "--out",
        str(out),
    ]
    assert concurrency.main(argv) == 0
    doc = json.loads(out.read_text())
    work = doc["equal_work"]
    assert work["ok"] and work["ignore_eos"] == {"ours-pN": True, "decoder-pN": True}
    assert work["expected_tokens_per_round"] == {"1": 48}  # JSON keys are strings
    assert [r["completion_tokens"] for r in doc["rounds"]] == [48, 48]
    assert "equal on every side in 1 of 1" in capsys.readouterr().out
