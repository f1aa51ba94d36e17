"""Speculative decoding in the batch decoder, on real models: drafts are made, verified and cut.

Whether the text equals plain decoding is a property of the model's kernels (see the
README on batch invariance); here: drafts are proposed and kept where the model
agrees, rejected drafts leave nothing in the KV cache, and the counts are reported.
"""

from __future__ import annotations

import pytest

from server.engine.batching import BatchDecoder, Ended, SamplingParams
from server.engine.decoder_types import DecoderConfig
from server.engine.request import Delta
from server.engine.speculation import speculator
from server.engine.speculation.draft_model import DraftModelError

# An edit task: the answer repeats long runs of the prompt, which prompt lookup can draft.
EDIT = (
    "Repeat the following list exactly: apples, oranges, bananas, pears, grapes, cherries, plums, peaches, "
    "apricots, mangoes, lemons, limes.\nList: apples, oranges,"
)
GREEDY = dict(temperature=0.0, repeat_penalty=1.0, max_tokens=24)


def run(decoder: BatchDecoder, prompts: list[str], **params) -> list[list]:
    events: list[list] = [[] for _ in prompts]
    for prompt, sink in zip(prompts, events):
        decoder.add(decoder.tokenize(prompt), SamplingParams(**{**GREEDY, **params}), sink.append)
    decoder.run_until_idle()
    return events


def load(path, **kw) -> BatchDecoder:
    return BatchDecoder.load(path, n_parallel=2, n_ctx_per_seq=256, n_batch=128, n_threads=2, **kw)


@pytest.fixture(scope="module")
def ngram(gemma_gguf):
    decoder = load(gemma_gguf, speculative="ngram")
    yield decoder
    decoder.close()


def test_prompt_lookup_drafts_and_the_model_keeps_most_of_an_exact_copy(ngram):
    (events,) = run(ngram, [EDIT])
    end = events[-1]
    assert isinstance(end, Ended) and end.finish_reason in ("stop", "length")
    assert "bananas" in "".join(e.text for e in events if isinstance(e, Delta))
    assert end.timings.draft_tokens > 0 and 0 < end.timings.draft_accepted <= end.timings.draft_tokens
    stats = ngram.stats()
    assert stats.draft_tokens >= end.timings.draft_tokens and stats.draft_accepted >= end.timings.draft_accepted
    # Fewer steps than tokens: accepted drafts came several per step.
    assert stats.steps < end.usage.completion_tokens + 2


def test_the_per_kind_counts_add_up_to_the_totals(ngram, monkeypatch):
    monkeypatch.setattr(speculator, "best_length", lambda cost, rows, tokens, k_max, p: k_max)  # drafts, to count
    run(ngram, [EDIT, EDIT.replace("apples", "figs")], max_tokens=48)
    stats = ngram.stats()
    kinds = {row[0]: row[1:] for row in stats.draft_by_kind}
    assert sum(k[3] for k in kinds.values()) >= 3, kinds  # several drafts: a count that only keeps the last shows
    assert any(name.startswith("own-") for name in kinds), kinds  # an edit copies its own prompt
    assert sum(k[4] for k in kinds.values()) == stats.draft_tokens
    assert sum(k[5] for k in kinds.values()) == stats.draft_accepted
    for offered, refused, probes, drafts, drafted, kept in kinds.values():
        assert refused <= offered and probes <= refused and kept <= drafted and drafts <= drafted
        assert drafts <= offered  # a draft was offered first (a probe is a refused one drafted)


def test_rejected_drafts_leave_no_kv_cells_and_every_slot_is_consistent(ngram):
    run(ngram, [EDIT, "Once upon a time, in a land far away, there lived a"], max_tokens=20)
    for slot in ngram._table.slots:  # idle now: each holds exactly the tokens it says it holds
        assert ngram._table.cells_for(slot) == len(slot.cached)


def test_sampled_requests_draft_too(ngram, monkeypatch):
    """Where a draft pays (here: always, the cost check put aside, as a loaded machine makes it
    say no), a sampled request drafts as a greedy one does. (That their answers equal plain
    decoding's, and constrained ones' and log-probabilities: tests/server/test_speculative_exact.py.)"""
    monkeypatch.setattr(speculator, "best_length", lambda cost, rows, tokens, k_max, p: k_max)
    before = ngram.stats().draft_tokens
    (events,) = run(ngram, [EDIT], temperature=0.9, seed=1, max_tokens=32)
    assert isinstance(events[-1], Ended) and events[-1].timings.draft_tokens > 0
    assert ngram.stats().draft_tokens >= before + events[-1].timings.draft_tokens


def test_the_served_model_as_its_own_draft_model_is_accepted_almost_always(gemma_gguf):
    decoder = load(gemma_gguf, speculative="draft", draft_model=str(gemma_gguf), draft_max=4)
    try:
        (events,) = run(decoder, ["The capital of France is"])
        t = events[-1].timings
        assert t.draft_tokens > 0 and t.draft_accepted >= 0.8 * t.draft_tokens
    finally:
        decoder.close()


def test_a_draft_model_with_another_vocabulary_is_refused(gemma_gguf, tiny_llama_gguf):
    with pytest.raises(DraftModelError, match="another vocabulary"):
        load(gemma_gguf, speculative="draft", draft_model=str(tiny_llama_gguf))


@pytest.mark.parametrize("bad", [dict(speculative="draft"), dict(speculative="maybe"), dict(draft_max=0)])
def test_bad_speculation_settings_are_refused(bad):
    with pytest.raises(ValueError):
        DecoderConfig(**bad)
