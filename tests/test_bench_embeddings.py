"""The embeddings bench's texts and summary (bench/embeddings.py); the real runs are the bench's own."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent / "bench"))

import embeddings  # noqa: E402


def test_texts_are_the_same_every_time_and_vary_in_length():
    a, b = embeddings.texts(200), embeddings.texts(200)
    lengths = [len(t.split()) for t in a]
    assert a == b and len(set(a)) == 200 and min(lengths) == 4 and max(lengths) == 60


def test_summary_pairs_rounds_and_gives_each_server_s_spread():
    raw = [
        {"round": r, "scenario": s, "server": n, "texts_per_s": (2.0 if n == "ours" else 1.0) * (r + 1)}
        for r in range(7)
        for s in embeddings.SCENARIOS
        for n in ("ours", "llama-server")
    ]
    raw += [{"round": r, "scenario": "latency", "server": n, "p50_ms": 5.0, "p95_ms": 9.0}
            for r in range(7) for n in ("ours", "llama-server")]  # fmt: skip
    summary = embeddings.summarize(raw)
    for s in embeddings.SCENARIOS:
        ratio = summary[s]["ours_over_llama_server"]
        assert ratio["median"] == 2.0 and ratio["supported"] == "faster"
        assert summary[s]["ours_texts_per_s"]["max"] == 14.0
    assert summary["latency"]["ours"]["p95_ms"]["median"] == 9.0
