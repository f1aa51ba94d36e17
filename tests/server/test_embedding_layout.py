"""Where sequences sit in an embedding batch (server/engine/embedding/layout.py), and the property it
exists for: a sequence's per-token vectors are the same bits alone and in any mix of others.

The placement rules are checked as arithmetic (hypothesis over cursors, lengths and candidate
sets); the property on real models (MiniLM f16 and Q8_0, an encoder; SmolLM2, a chat model whose
KV cache holds the batch), through an Embedder with pooling "none", so every token's vector is
compared, over mixes of lengths around the kernel's boundaries: 16 (a SIMD group), 64 (a key
tile, and the row count from which llama.cpp's own paths take the tiled kernel), and past them.
"""

from __future__ import annotations

import random
import time

import llama_cpp.llama_cpp as lc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_cpp import _internals

from server.engine import invariance
from server.engine.embedding import layout
from server.engine.embedding.embedder import Embedder, EmbedderConfig
from server.engine.embedding.jobs import EmbedJob
from server.engine.embedding.layout import KV_TILE, Candidate, pack, place

LENGTHS = (1, 2, 7, 15, 16, 17, 24, 31, 32, 33, 40, 47, 48, 49, 56, 63, 64, 65, 70, 100, 127, 128)


def valid(start: int, n: int) -> bool:
    """Where a sequence computes as alone, by the rule layout.py derives from ggml's kernel."""
    if n > KV_TILE:
        return start % KV_TILE == 0
    return start % KV_TILE + n <= KV_TILE


# --- the arithmetic ------------------------------------------------------------------------------
@given(st.integers(0, 600), st.integers(1, 300))
def test_place_is_the_first_valid_row(cursor, n):
    start = place(cursor, n)
    assert start >= cursor and valid(start, n)
    assert not any(valid(s, n) for s in range(cursor, start))


@given(st.lists(st.integers(1, 140), min_size=1, max_size=40), st.integers(1, 12), st.booleans())
def test_pack_seats_sequences_where_they_compute_as_alone(lengths, max_sequences, exact):
    rng = random.Random(len(lengths))
    cands = [Candidate(i, [rng.randrange(1, 999) for _ in range(n)]) for i, n in enumerate(lengths)]
    seats = pack(cands, max_sequences, exact, cap=layout.TILED_ROWS if exact else 200)
    first, start = seats[0]
    assert first is cands[0], "the input that waited longest goes first"
    assert start == 0
    assert len(seats) <= max_sequences and len({c.key for c, _ in seats}) == len(seats)
    spans = sorted((start, start + len(c.tokens)) for c, start in seats)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "two sequences share a row"
    limit = 200 if not exact else layout.TILED_ROWS
    assert len(seats) == 1 or spans[-1][1] <= limit
    for c, start in seats:
        if exact:
            assert valid(start, len(c.tokens))
    if not exact:  # BATCH_INVARIANT=off: back to back
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_a_tile_end_is_filled_with_the_longest_that_fits():
    """Few filler rows: after a 40-token text, the 24-token one fills its tile, not a 10-token one."""
    cands = [Candidate(k, [1] * n) for k, n in (("a", 40), ("b", 10), ("c", 24), ("d", 70))]
    seats = {c.key: start for c, start in pack(cands, 8)}
    assert seats == {"a": 0, "c": 40, "d": 64, "b": 134}


# --- the property, on real models ----------------------------------------------------------------
def load(path, limit: int) -> Embedder:
    invariance.configure_process()
    params = lc.llama_model_default_params()
    invariance.model_params(params)
    model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
    return Embedder(model, EmbedderConfig("none", limit, 2, True), owns_model=True)


@pytest.fixture(scope="module", params=["minilm-f16", "minilm-q8_0", "smollm2"])
def model(request, minilm_gguf, smollm2_gguf, tmp_path_factory):
    """An Embedder (pooling "none") and a pool of sequences with each one's vectors computed alone."""
    if request.param == "minilm-q8_0":
        from conversion.quantizer import quantize

        path = quantize(minilm_gguf, tmp_path_factory.mktemp("layout-q8") / "q8_0.gguf", "Q8_0", progress=False)
    else:
        path = smollm2_gguf if request.param == "smollm2" else minilm_gguf
    limit = 128 if request.param == "smollm2" else 512
    embedder = load(path, limit)
    rng = np.random.default_rng(7)
    n_vocab = embedder.facts.n_vocab
    pool = [rng.integers(1000, min(n_vocab, 20000), n).tolist() for n in LENGTHS if n <= limit]
    alone = [run(embedder, [[s]])[0][0] for s in pool]
    yield embedder, pool, alone
    embedder.close()


def run(embedder: Embedder, jobs: list[list[list[int]]]) -> list[list[np.ndarray]]:
    """Every job's per-token vectors, all jobs queued at once and batched together."""
    handles = [EmbedJob(seqs, "none", time.monotonic() + 3600) for seqs in jobs]  # no deadline on a busy CPU
    for job in handles:
        embedder.add(job)
    while embedder.busy:
        embedder.step()
    return [job.wait().vectors for job in handles]


mixes = st.lists(st.lists(st.integers(0, len(LENGTHS) - 1), min_size=1, max_size=8), min_size=1, max_size=6)


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=12, deadline=None, suppress_health_check=SLOW_OK)
@given(mixes)
def test_a_sequence_has_the_same_bits_in_any_mix(model, mix):
    embedder, pool, alone = model
    if embedder.n_embd != 384:  # the chat model: 20 times slower per token than MiniLM, so smaller mixes
        mix = [job[:3] for job in mix[:2]]
    mix = [[i % len(pool) for i in job] for job in mix]
    steps, stats = embedder.steps, embedder.stats()
    got = run(embedder, [[pool[i] for i in job] for job in mix])
    for job, vectors in zip(mix, got):
        for i, v in zip(job, vectors):
            assert v.shape == alone[i].shape and v.tobytes() == alone[i].tobytes(), f"{len(pool[i])} tokens, mix {mix}"
    n = sum(len(job) for job in mix)
    assert embedder.steps - steps <= n and embedder.stats().sequences - stats.sequences == n


def test_mixes_share_batches_and_rows_past_a_tile(model):
    """The comparison above is about shared batches: a mix of every length goes through batches
    of several sequences and of more than 64 rows, the tiled kernel's."""
    embedder, pool, alone = model
    before = embedder.stats()
    got = run(embedder, [pool, pool[::-1]])
    after = embedder.stats()
    assert after.steps - before.steps < len(pool), "sequences shared batches"
    assert (after.tokens - before.tokens) / (after.steps - before.steps) > KV_TILE
    assert all(v.tobytes() == a.tobytes() for v, a in zip(got[0], alone))


def test_a_sequence_across_a_key_tile_gets_other_bits(model, monkeypatch):
    """Why the tiles: placed back to back (the rule broken on purpose), some sequences of a mix change."""
    embedder, pool, alone = model
    monkeypatch.setattr(layout, "place", lambda cursor, n: cursor)
    got = run(embedder, [pool[3:], pool[:3]])
    changed = [len(s) for s, v, a in zip(pool[3:], got[0], alone[3:]) if v.tobytes() != a.tobytes()]
    assert changed, "every sequence kept its bits at any offset: the layout rules would not be needed"


def test_a_lone_sequence_costs_its_own_rows(model):
    """With the tiled attention at any row count, a lone text costs its own rows: no floor of 64
    rows (a 30-token text used to cost 64), one filler row for a lone token."""
    embedder, pool, _ = model
    for tokens in pool:
        before = embedder.stats().tokens
        run(embedder, [[tokens]])
        rows = embedder.stats().tokens - before
        assert rows == len(tokens) + (len(tokens) == 1), f"{len(tokens)} tokens"
