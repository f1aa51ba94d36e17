"""How a decode step's rows are split into ubatches, and how a lone far row gets a neighbour.

Pure Python: `invariance.ubatches` mirrors llama.cpp's split_equal for per-sequence KV
streams; `stepplan.shape` must leave no row alone in its ubatch past LONE_ROW_MIN_POS
(flash attention would take its thread-split path there). The end-to-end property is
tested on real models in test_invariance.py.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

from server.engine import invariance, stepplan
from server.engine.invariance import LONE_ROW_MIN_POS as FAR
from server.engine.invariance import MAX_ROWS


def test_one_row_each_from_neighbouring_slots_is_one_ubatch():
    assert invariance.ubatches([0, 1, 2, 3], 512) == [{0: [0], 1: [1], 2: [2], 3: [3]}]


def test_a_gap_in_slot_ids_starts_a_new_ubatch():
    assert invariance.ubatches([0, 2], 512) == [{0: [0]}, {2: [1]}]


def test_rows_are_taken_evenly_then_the_rest_alone():
    # slot 0 decodes (1 row), slot 1 prefills 4 rows: one row each, then slot 1's other three
    assert invariance.ubatches([0, 1, 1, 1, 1], 512) == [{0: [0], 1: [1]}, {1: [2, 3, 4]}]


def test_order_of_appearance_decides_the_runs():
    # decoders of slots 0, 2, 3 first, then slot 1's prompt: 0 and 1 pair up, then 2 and 3
    ubs = invariance.ubatches([0, 2, 3, 1, 1], 512)
    assert ubs == [{0: [0], 1: [3]}, {2: [1], 3: [2]}, {1: [4]}]


def test_the_ubatch_size_bounds_the_rows():
    assert invariance.ubatches([0] * 5, 2) == [{0: [0, 1]}, {0: [2, 3]}, {0: [4]}]


def test_a_lone_row_counts_only_far_into_the_context():
    assert invariance.lone_rows([0], [FAR - 1], 512) == []
    assert invariance.lone_rows([0], [FAR], 512) == [0]
    assert invariance.lone_rows([0, 1], [FAR, FAR], 512) == []


def feed(slot: int, pos: int, k: int, n_out: int = 1) -> stepplan.Feed:
    seq = SimpleNamespace(slot=SimpleNamespace(id=slot, cached=list(range(1000, 1000 + pos))))
    return stepplan.Feed(seq, pos, [7] * k, n_out)


def lone(feeds) -> list[int]:
    seqs = [f.seq.slot.id for f in feeds for _ in f.tokens]
    pos = [f.pos + j for f in feeds for j in range(len(f.tokens))]
    return invariance.lone_rows(seqs, pos, 512)


def test_a_lone_decoder_far_in_recomputes_its_previous_token():
    feeds = [feed(0, 300, 1)]
    stepplan.shape(feeds, 512, MAX_ROWS)
    assert (feeds[0].pos, feeds[0].tokens) == (299, [1299, 7])
    assert feeds[0].n_out == 1 and lone(feeds) == []


def test_a_lone_decoder_near_the_start_is_left_alone():
    feeds = [feed(0, 10, 1)]
    stepplan.shape(feeds, 512, MAX_ROWS)
    assert (feeds[0].pos, len(feeds[0].tokens)) == (10, 1)


def test_a_prompt_chunk_leaving_one_row_behind_takes_one_more():
    feeds = [feed(0, 400, 1), feed(1, 300, 2, n_out=0)]
    assert lone(feeds) == [1]
    stepplan.shape(feeds, 512, MAX_ROWS)
    assert lone(feeds) == [] and (feeds[1].pos, len(feeds[1].tokens)) == (299, 3)


def test_a_full_chunk_leaving_one_row_behind_gives_one_back():
    feeds = [feed(0, 400, MAX_ROWS - 1), feed(1, 300, MAX_ROWS)]
    stepplan.shape(feeds, 512, MAX_ROWS)
    assert lone(feeds) == [] and len(feeds[1].tokens) == MAX_ROWS - 1 and feeds[1].n_out == 0


def test_no_mix_of_decoders_and_prompts_keeps_a_lone_far_row():
    rng = random.Random(12)
    for _ in range(500):
        slots = sorted(rng.sample(range(8), rng.randint(1, 8)))
        feeds = [feed(s, rng.choice([5, FAR - 2, FAR, 900]), rng.choice([1, 1, 2, 3, MAX_ROWS])) for s in slots]
        stepplan.shape(feeds, 512, MAX_ROWS)
        assert lone(feeds) == [], [(f.seq.slot.id, f.pos, len(f.tokens)) for f in feeds]
        assert all(0 < len(f.tokens) <= MAX_ROWS for f in feeds)
