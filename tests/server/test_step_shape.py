"""One pass over the weights per decode step: the shape of the batches the decoder builds.

With a KV stream per slot, llama.cpp splits a batch into passes (`llama_batch_allocr::split_equal`,
sequential): a pass holds a run of consecutive sequence ids, each giving it the same number of rows.
A batch of slots 0, 2, 3 is two passes; drafts of 1 and 9 tokens beside each other are several; on a
GPU with a small model each pass costs about a whole step. `split_equal` below follows that code
(llama.cpp's src/llama-batch.cpp at the pinned version), so the tests can count the passes of every
step the real decoder makes.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from server.engine import stepplan
from server.engine.batching import BatchDecoder, Ended, SamplingParams
from server.engine.request import Delta
from server.engine.sequence import DECODING
from server.engine.speculation import speculator
from server.engine.speculation.cost import StepCost, common_length


def split_equal(rows: list[tuple[int, int]]) -> int:
    """How many passes llama.cpp makes of a batch given as (sequence id, rows) in batch order."""
    left = dict(rows)
    passes = 0
    while any(left.values()):
        ids = [s for s, _ in rows if left[s]]
        run = [ids[0]]
        for s in ids[1:]:
            if s != run[-1] + 1:
                break
            run.append(s)
        k = min(left[s] for s in run)
        for s in run:
            left[s] -= k
        passes += 1
    return passes


def test_the_split_rule():
    assert split_equal([(0, 1), (1, 1), (2, 1)]) == 1
    assert split_equal([(0, 1), (2, 1), (3, 1)]) == 2  # a gap in the ids
    assert split_equal([(0, 1), (1, 9), (2, 4)]) == 3  # unequal rows


def _seq(slot: int, draft: tuple[int, ...]):
    spec = SimpleNamespace(draft=draft)
    return SimpleNamespace(state=DECODING, next_token=7, spec=spec, n_past=10, slot=SimpleNamespace(id=slot), id=slot)


def test_shorter_drafts_are_padded_to_the_longest_and_only_real_rows_are_read():
    seqs = [_seq(0, ()), _seq(1, (5, 6, 7)), _seq(2, (8,))]
    feeds = stepplan.plan(seqs, n_batch=64, prefill_chunk=32, equal_rows=True)  # type: ignore[arg-type]
    assert [len(f.tokens) for f in feeds] == [4, 4, 4]
    assert [(f.n_out, f.pad, f.real) for f in feeds] == [(1, 3, 1), (4, 0, 4), (2, 2, 2)]
    assert feeds[1].tokens == [7, 5, 6, 7]
    unpadded = stepplan.plan(seqs, n_batch=64, prefill_chunk=32)  # type: ignore[arg-type]
    assert [len(f.tokens) for f in unpadded] == [1, 4, 2] and not any(f.pad for f in unpadded)


def test_padding_never_passes_the_last_cell_of_a_sequences_context():
    seqs = [_seq(0, ()), _seq(1, (5, 6, 7, 8, 9))]
    seqs[0].n_past = 508  # of 512: cells 508 (its token) to 511 are left, one kept free as drafts keep it
    feeds = stepplan.plan(seqs, n_batch=64, prefill_chunk=32, equal_rows=True, n_ctx=512)  # type: ignore[arg-type]
    assert [(len(f.tokens), f.pad) for f in feeds] == [(3, 2), (6, 0)]
    assert feeds[0].pos + len(feeds[0].tokens) <= 511


def test_the_common_length_weighs_the_padding():
    """Where a row costs little (a GPU), one sequence's long draft is worth padding three others;
    where a row costs nearly a step (a small model on a CPU), not."""
    gpu, cpu = StepCost(64), StepCost(64)
    for rows in (4, 8, 16, 32, 4, 12):
        gpu.observe(rows, 0.003 + 0.00002 * rows)
        cpu.observe(rows, 0.010 + 0.004 * rows)
    assert common_length(gpu, [0.9, 0.5, 0.5, 0.5], [8, 0, 0, 0], 4) == 8
    assert common_length(cpu, [0.9, 0.5, 0.5, 0.5], [8, 0, 0, 0], 4) == 0
    assert common_length(StepCost(64), [0.5], [3, 5], 2) == 5  # unmeasured: the longest


COPY = (
    "Repeat the following list exactly: apples, oranges, bananas, pears, grapes, cherries, plums, peaches, "
    "apricots, mangoes, lemons, limes, figs, dates, kiwis.\nList: apples, oranges,"
)


@pytest.fixture(scope="module")
def pair(smollm2_gguf):
    with pytest.MonkeyPatch.context() as patch:  # every draft made and padded, never cut: the shapes are tested
        patch.setattr(speculator, "best_length", lambda cost, rows, tokens, k_max, p: k_max)
        patch.setattr(speculator, "common_length", lambda cost, ps, lengths, n: max(lengths))
        decoders = {
            mode: BatchDecoder.load(smollm2_gguf, n_parallel=4, n_ctx_per_seq=512, n_threads=2, speculative=mode)
            for mode in ("off", "ngram")
        }
        yield decoders
        for d in decoders.values():
            d.close()


def _run(decoder: BatchDecoder, prompts: list[str], passes: list[int]) -> list[str]:
    decode = decoder._decode

    def counted(n: int) -> None:
        if all(f.seq.state == DECODING for f in decoder._feeds):  # prompts mixed in are split anyway
            passes.append(split_equal([(f.seq.slot.id, len(f.tokens)) for f in decoder._feeds]))
        decode(n)

    decoder._decode = counted  # type: ignore[method-assign]
    sinks: list[list] = [[] for _ in prompts]
    params = SamplingParams(temperature=0, max_tokens=40, repeat_penalty=1.0)
    try:
        for prompt, sink in zip(prompts, sinks):
            decoder.add(decoder.tokenize(prompt), params, sink.append)
        decoder.run_until_idle()
    finally:
        del decoder._decode
    assert all(isinstance(s[-1], Ended) for s in sinks)
    return ["".join(e.text for e in s if isinstance(e, Delta)) for s in sinks]


def test_every_decode_step_is_one_pass_and_the_answers_are_plain_decodings(pair):
    # Three requests, then a fourth after the first two ended: slots are reused from the lowest id.
    prompts = [COPY, "Tell me about the sea.", COPY.replace("apples", "melons"), "Count to twenty: one, two,"]
    passes: list[int] = []
    drafted = _run(pair["ngram"], prompts[:3], passes) + _run(pair["ngram"], prompts[3:], passes)
    plain = _run(pair["off"], prompts[:3], []) + _run(pair["off"], prompts[3:], [])
    assert drafted == plain  # padding rows never change an answer
    assert passes and set(passes) == {1}, f"passes per step: {sorted(set(passes))}"
    assert pair["ngram"].stats().draft_accepted > 0  # drafts were made beside undrafted sequences
    table = pair["ngram"]._table
    for slot in table.slots:  # the padding's cells are gone
        assert table.cells_for(slot) == len(slot.cached)


def test_a_new_request_takes_the_lowest_free_slot_among_equal_prefixes(pair):
    """Not the least recently used one: one request after another, with nothing in common, keep
    taking slot 0, and three together take 0, 1 and 2."""
    decoder = pair["off"]
    taken = []
    for word in ("Alpha", "Bravo", "Charlie"):
        seq = decoder.add(decoder.tokenize(f"{word} one two"), SamplingParams(max_tokens=2), lambda e: None)
        decoder.run_until_idle()
        taken.append(seq.slot.id)
    assert taken == [0, 0, 0]
    seqs = [decoder.add(decoder.tokenize(f"{w} three"), SamplingParams(max_tokens=2), lambda e: None) for w in "XYZ"]
    decoder.run_until_idle()
    assert sorted(s.slot.id for s in seqs) == [0, 1, 2]
