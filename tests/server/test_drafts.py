"""Draft sources for speculative decoding: what they propose, and how the draft length adapts.

Pure logic over token ids: whether a draft is right is decided by the target model in
the decoder (tested with real models in test_speculative.py); here, only what is guessed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.engine.speculation.cost import Acceptance, StepCost, best_length, expected_kept
from server.engine.speculation.drafts import DraftLength, NgramDraft
from server.engine.speculation.speculator import Speculator


def draft(history, n_max=8, **kw):
    source = NgramDraft(**kw)
    source.begin(0, history)
    return source.draft(0, history, n_max)


def test_a_repeated_run_is_proposed_from_its_earlier_occurrence():
    text = [5, 6, 7, 8, 9, 10, 11, 1, 2, 5, 6, 7]
    assert draft(text, n_max=3) == [8, 9, 10]


def test_the_longest_match_wins_over_a_later_shorter_one():
    # "2 3" occurs twice; "1 2 3" only once, followed by 4.
    history = [1, 2, 3, 4, 0, 2, 3, 9, 0, 1, 2, 3]
    assert draft(history, n_max=1) == [4]


def test_no_match_no_draft_and_nothing_for_n_max_zero():
    assert draft([1, 2, 3, 4]) == []
    assert draft([1, 2, 1, 2], n_max=0) == []


def test_the_index_grows_with_the_answer():
    source = NgramDraft()
    history = [1, 2, 3, 4, 5]
    source.begin(7, history)
    assert source.draft(7, history, 4) == []
    history += [9, 1, 2, 3]
    assert source.draft(7, history, 4) == [4, 5, 9, 1]
    source.end(7)
    assert source.draft(7, history, 4) == []  # forgotten after end


@given(st.lists(st.integers(0, 5), max_size=60), st.integers(0, 10))
def test_a_draft_always_continues_an_earlier_occurrence_of_the_history_tail(history, n_max):
    proposed = draft(history, n_max=n_max, n_match=4, n_min=2)
    assert len(proposed) <= n_max
    if proposed:
        # Some earlier position p has history[p-2:p] == the last two tokens and history[p:] starts with the draft.
        tail = history[-2:]
        assert any(
            history[p - 2 : p] == tail and history[p : p + len(proposed)] == proposed for p in range(2, len(history))
        )


def test_draft_length_backs_off_when_drafts_miss_and_recovers():
    length = DraftLength(n_max=8)
    assert length.next() > 0
    for _ in range(12):
        length.update(drafted=8, accepted=0)
    lengths = [length.next() for _ in range(16)]
    assert lengths.count(0) >= 14 and max(lengths) > 0  # mostly off, with a probe now and then
    for _ in range(12):
        length.update(drafted=2, accepted=2)
    assert length.next() == 8


@pytest.mark.parametrize("n_match, n_min", [(0, 0), (2, 3)])
def test_bad_ngram_sizes_are_refused(n_match, n_min):
    with pytest.raises(ValueError):
        NgramDraft(n_match=n_match, n_min=n_min)


def fitted(a: float, b: float) -> StepCost:
    cost = StepCost(max_rows=64)
    for rows in [1, 2, 1, 4, 1, 8, 1, 3] * 4 + [200]:  # a 200-row prompt chunk is left out of the fit
        cost.observe(rows, a + b * rows)
    return cost


def test_the_step_cost_is_read_from_its_table_between_and_past_the_measured_sizes():
    line = fitted(0.03, 0.001)
    for rows in (1, 5, 8, 20, 64):  # measured (1, 8), between (5), past them (20, 64): on the line
        assert line.seconds(rows) == pytest.approx(0.03 + 0.001 * rows)
    one_size = StepCost(max_rows=64)
    for _ in range(10):
        one_size.observe(4, 0.05)
    assert one_size.seconds(5) is None  # drafts are allowed until rows vary: that is how it learns
    assert one_size.seconds(4) is None


def test_a_server_that_has_seen_only_one_row_steps_drafts_to_measure():
    """A fresh server whose first prompt is longer than the table's rows (left out) has timed
    nothing but one-row decode steps: the first draft is made, to learn what more rows cost."""
    cost = StepCost(max_rows=64)
    for _ in range(5):
        cost.observe(1, 0.01)
        cost.observe(300, 0.9)  # a prompt chunk: not a decode step's shape, left out
    assert best_length(cost, 1, 1.0, 8, 0.5) == 8


def test_a_step_that_is_no_line_is_priced_as_measured():
    """SmolLM2 on a quiet 2-core CPU: the second row costs nearly a step, rows past 8 a third of one. A
    copy kept at p = 0.9 pays with 8 drafted tokens, not with 1 (a line through these points
    would have it the other way round)."""
    cpu = StepCost(max_rows=64)
    for rows, ms in [(1, 7.4), (2, 14.5), (4, 20.8), (8, 31.8), (16, 49.6)] * 3:
        cpu.observe(rows, ms / 1000)
    assert cpu.seconds(2) == pytest.approx(0.0145) and cpu.seconds(12) == pytest.approx(0.0407)
    assert cpu.seconds(32) == pytest.approx(0.0496 + 16 * (0.0496 - 0.0318) / 8)
    assert best_length(cpu, 1, 1.0, 15, 0.9) == 8
    assert best_length(cpu, 1, 1.0, 15, 0.6) == 0  # a 2-gram's guess: no length pays here


def test_a_row_counts_average_follows_the_load():
    cost = StepCost(max_rows=64)
    cost.observe(8, 0.040)
    for _ in range(30):
        cost.observe(1, 0.010)
    for _ in range(30):
        cost.observe(1, 0.020)  # the machine got busier
    assert cost.seconds(1) == pytest.approx(0.020, rel=0.01)


def test_the_kept_share_counts_a_run_up_to_its_first_miss():
    acceptance = Acceptance()
    for _ in range(40):
        acceptance.update(drafted=8, kept=3)  # 3 kept, the 4th tried and missed, 4 never looked at
    assert acceptance.p == pytest.approx(0.75, abs=0.01)
    assert expected_kept(0.5, 3) == pytest.approx(0.875)


def plan(cost: StepCost, n_decoding: int, p: float) -> list[int]:
    speculator = Speculator(NgramDraft(), n_max=8, max_step_tokens=64)
    speculator.cost = cost
    history = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12] * 3
    for bucket in [(kind, streak, False) for kind in range(1, 13) for streak in (False, True)]:
        speculator.acceptance[bucket] = Acceptance(prior=p)
        speculator.acceptance[bucket].kept, speculator.acceptance[bucket].tried = 100 * p, 100.0
    states = []
    for key in range(n_decoding):
        state = speculator.begin(key, history)
        states.append((key, state, history, 100))
    speculator.plan(states, n_decoding)
    return [len(state.draft) for _, state, _, _ in states]


def test_drafts_where_rows_are_cheap_and_not_where_each_row_costs_a_step():
    gpu, cpu = fitted(0.03, 0.0005), fitted(0.016, 0.014)
    assert plan(gpu, 1, 0.6) == [6] and min(plan(gpu, 4, 0.6)) >= 4  # about DraftLength's first guess
    assert plan(cpu, 1, 0.95) != [0]  # a copy the model keeps: worth it even here
    assert plan(cpu, 1, 0.5) == [0] and plan(cpu, 4, 0.9) == [0, 0, 0, 0]


def test_the_draft_length_is_the_one_that_gives_the_most_tokens_per_second():
    """A run ends at its first miss: at p = 0.7, where a row costs 0.44 of a step, two tokens give
    the most; the longer drafts that would still beat no draft only add rows."""
    cpu = fitted(0.01, 0.0044)
    assert best_length(cpu, 1, 1.0, 12, 0.7) == 2
    assert best_length(cpu, 1, 1.0, 12, 0.97) >= 10  # a copy nearly always kept: long
    assert best_length(cpu, 1, 1.0, 12, 0.3) == 0
    assert best_length(StepCost(max_rows=64), 1, 1.0, 12, 0.3) == 12  # unmeasured: draft, to measure


def test_a_draft_source_that_takes_time_is_counted_against_its_drafts():
    """A draft model runs once per drafted token: even on a GPU, where a step's rows are nearly free,
    a draft model as slow as the target never pays, and a ten times faster one pays when it is
    mostly right."""
    gpu = fitted(0.03, 0.0005)
    gpu.per_draft_token = 0.03
    assert plan(gpu, 1, 0.99) == [0]
    gpu.per_draft_token = 0.003
    assert plan(gpu, 1, 0.9) != [0] and plan(gpu, 1, 0.1) == [0]


def test_the_kind_of_an_ngram_guess_is_the_length_it_matched():
    source = NgramDraft(n_match=12, n_min=2)
    source.begin(0, [])
    copied = list(range(100, 120))
    history = [*copied, 7, 8, *copied[:14]]  # copying the run again: 14 tokens in, a 12-gram matches
    assert source.kind(0, history) == 12 and source.draft(0, history, 4) == copied[14:18]
    assert source.kind(0, [*history, 5]) == 0 and source.draft(0, [*history, 5], 4) == []  # nothing to copy


def test_what_one_request_learnt_of_a_kind_serves_the_next_and_refused_kinds_are_probed():
    cpu = fitted(0.016, 0.014)
    speculator = Speculator(NgramDraft(), n_max=8, max_step_tokens=64)
    speculator.cost = cpu
    history = list(range(100, 130)) * 2
    for _ in range(30):  # an earlier request: drafts of this kind (12-gram matches, no streak) were all kept
        speculator.acceptance.setdefault((12, False, False), Acceptance()).update(drafted=8, kept=8)
    state = speculator.begin(1, history)
    speculator.plan([(1, state, history, 100)], 1)
    assert len(state.draft) > 0 and state.kind == 12
    for _ in range(30):  # then they all missed
        speculator.acceptance[(12, False, False)].update(drafted=8, kept=0)
    lengths = []
    for _ in range(112):
        speculator.plan([(1, state, history, 100)], 1)
        lengths.append(len(state.draft))
    probes = [i + 1 for i, n in enumerate(lengths) if n]
    assert probes == [16, 48, 112] and {lengths[i - 1] for i in probes} == {2}  # refused, probed ever more rarely
    speculator.acceptance[(12, False, False)].update(drafted=2, kept=2)  # a probe wholly kept: look again soon
    assert speculator.acceptance[(12, False, False)].probe_every == 16


def test_acceptance_is_kept_apart_inside_a_copied_run():
    speculator = Speculator(NgramDraft(), n_max=8, max_step_tokens=64)
    history = list(range(100, 130)) * 2
    state = speculator.begin(1, history)
    state.kind, state.draft = 12, (1, 2, 3)
    speculator.accept(state, lambda i, kept: [1, 2, 3, 4][i])  # kept whole
    assert state.streak and speculator.acceptance[(12, False, False)].p > 0.5
    state.draft = (1, 2, 3)
    speculator.accept(state, lambda i, kept: 9)  # missed at once: measured in the streak's bucket
    assert not state.streak and speculator.acceptance[(12, True, False)].p < 0.5


def test_a_request_that_repeats_an_earlier_one_drafts_the_earlier_answer_from_the_pool():
    source = NgramDraft(n_match=12, n_min=2)
    prompt, answer = list(range(1000, 1030)), list(range(2000, 2040))
    source.begin(0, prompt)
    source.kind(0, [*prompt, *answer])  # the first request, indexed as it was answered
    source.end(0)
    source.begin(1, prompt)  # the same request again, a few tokens into the same answer
    again = [*prompt, *answer[:3]]
    assert source.kind(1, again) == source.long_kind  # 33 tokens in: the long pool knows them
    assert source.draft(1, again, 8) == answer[3:11]
    short = [*prompt[-20:], *answer[:3]]  # fewer than long_n tokens: the 12-gram pool
    source.begin(2, short)
    assert source.kind(2, short) == source.pool_kind and source.draft(2, short, 8) == answer[3:11]
    fresh = NgramDraft(n_match=12, n_min=2)
    fresh.begin(1, prompt)
    assert fresh.kind(1, again) == 0 and fresh.draft(1, again, 8) == []  # nothing seen before, nothing to copy


def test_a_repeated_answer_whose_records_share_their_keys_is_drafted_whole_from_the_long_pool():
    """`"city": "` comes before Paris in one record and London in the next: the last 12 tokens
    cannot tell which, the last 32 can."""
    key = list(range(500, 514))  # 14 tokens shared by every record, longer than n_match
    records = [[*key, 600 + i, 601 + i, 602 + i] for i in range(0, 30, 3)]
    prompt, answer = list(range(1000, 1020)), [t for r in records for t in r]
    source = NgramDraft(n_match=12, n_min=2)
    source.begin(0, prompt)
    source.kind(0, [*prompt, *answer])
    source.end(0)
    source.begin(1, prompt)
    history, drafted = [*prompt, *answer[:40]], []  # the same request, part way into it
    while len(history) < len(prompt) + len(answer):
        guess = source.draft(1, history, 8) or [-1]
        drafted.append(guess[0] == answer[len(history) - len(prompt)])
        history.append(answer[len(history) - len(prompt)])
    assert all(drafted)
    fresh = NgramDraft(n_match=12, n_min=2, long_n=10**6)  # without it: the 12-gram pool, wrong at record starts
    fresh.begin(0, prompt)
    fresh.kind(0, [*prompt, *answer])
    fresh.begin(1, prompt)
    misses = sum(
        fresh.draft(1, [*prompt, *answer[:i]], 1) != [answer[i]] for i in range(40, len(answer)) if i % 17 == 14
    )
    assert misses > 0


def test_the_pool_is_emptied_when_full():
    source = NgramDraft(n_match=2, n_min=1, pool_max=10)
    source.begin(0, [])
    source.kind(0, list(range(40)))
    source.kind(0, [*range(40), 99])  # over the limit: emptied before indexing the rest
    assert len(source._pool) <= 10 + 1


@given(
    draft=st.lists(st.integers(0, 3), max_size=8),
    target=st.lists(st.integers(0, 3), min_size=9, max_size=9),
    end=st.sampled_from([None, 0, 1]),
)
def test_each_position_is_chosen_once_in_order_and_never_after_a_miss_or_an_end(draft, target, end):
    """A sampler draws a random number per choice: verification must choose exactly the positions
    plain decoding would have sampled (the kept ones, then the first miss or the one after the
    draft), so the draws are the same. A kept end-of-generation token ends the walk."""
    speculator = Speculator(NgramDraft(), n_max=8, max_step_tokens=64)
    state = speculator.begin(1, [])
    state.kind, state.draft = 3, tuple(draft)
    calls: list[tuple[int, list[int]]] = []

    def choose(i: int, kept: list[int]) -> int:
        calls.append((i, list(kept)))
        return target[i]

    out = speculator.accept(state, choose, lambda token: token == end)
    plain = []  # what plain decoding samples, token by token, until it leaves the draft or ends
    for i, token in enumerate(target):
        plain.append(token)
        if i >= len(draft) or token != draft[i] or token == end:
            break
    assert out == plain
    assert calls == [(i, plain[:i]) for i in range(len(plain))]
    assert state.accepted == len(plain) - 1 and state.drafted == len(draft) and state.draft == ()


@given(
    st.dictionaries(st.integers(1, 64), st.floats(1e-4, 1.0), min_size=2, max_size=20),
    st.integers(1, 200),
)
def test_the_cost_table_is_exact_where_measured_and_never_falls_with_more_rows(times, probe):
    """Whatever the measured times, a size is priced as measured; and where the times grow with the
    rows, so does every price read from the table, also past its ends."""
    cost = StepCost(max_rows=64)
    for rows, seconds in times.items():
        cost.observe(rows, seconds)
    assert all(cost.seconds(r) == t for r, t in times.items())
    rising = StepCost(max_rows=64)
    for rows, seconds in zip(sorted(times), sorted(times.values())):
        rising.observe(rows, seconds)
    prices = [rising.seconds(r) for r in range(1, probe + 1)]
    assert all(p is not None and p > 0 for p in prices)
    assert all(a <= b * (1 + 1e-12) for a, b in zip(prices, prices[1:]))
