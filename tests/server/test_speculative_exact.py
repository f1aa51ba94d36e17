"""Speculation changes nothing but speed, for every kind of request, on two real models.

A request decoded with n-gram drafts (SPECULATIVE=ngram) must give the bytes it gives
without them: sampled with a seed at any temperature with top-k, top-p, min-p and
penalties (each drafted row is sampled with the request's chain, in order, drawing the
random numbers plain decoding draws), under a JSON Schema or a GBNF grammar (the grammar
advances by each kept token before the next row is sampled), and with log-probabilities
(each accepted token's are read from its verification row: the same bits). Every case
also asserts that drafts were proposed and kept for it, or it would prove nothing: the
prompts ask for answers that copy from the prompt, which prompt lookup drafts.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.engine.batching import BatchDecoder, Ended, SamplingParams
from server.engine.request import Delta
from server.engine.speculation import speculator
from server.model.schema_grammar import schema_to_gbnf

MODELS = ["gemma", "smollm2"]
LIST = (
    "Repeat the following list exactly: apples, oranges, bananas, pears, grapes, cherries, plums, peaches, "
    "apricots, mangoes, lemons, limes, figs, dates, kiwis.\nList: apples, oranges,"
)
# Structured extraction: the answer's fields are copied from the prompt.
EXTRACT = (
    "Extract the customer's details as JSON.\n"
    "Text: Dear support, my name is Margaret Okonkwo-Lindqvist and I live at 42 Wellington Crescent, "
    "Aberdeen AB10 6XY, Scotland. My email address is margaret.okonkwo@example.org and my order "
    "number is ZX-88213-QL-4471. Please send the replacement kettle to the same address.\nJSON: "
)
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "address": {"type": "string"},
        "email": {"type": "string"},
        "order": {"type": "string"},
    },
    "required": ["name", "address", "email", "order"],
    "additionalProperties": False,
}
# A grammar of its own: lines "- fruit", copied from the list in the prompt.
FRUIT_GBNF = 'root ::= ("- " [a-z]+ "\\n"){3,12}'
LINES = (
    "Fruits:\n- apples\n- oranges\n- bananas\n- pears\n- grapes\n- cherries\n- plums\n- peaches\n\nAgain:\n- apples\n"
)
SAMPLERS = [
    dict(temperature=0.3, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1),
    dict(temperature=0.7, top_k=0, top_p=0.9, min_p=0.0, frequency_penalty=0.2, presence_penalty=0.1),
    dict(temperature=1.0, top_k=20, top_p=1.0, min_p=0.1, repeat_penalty=1.05, repeat_last_n=16),
    dict(temperature=1.2, top_k=40, top_p=0.8, min_p=0.05, repeat_penalty=1.0),
]


def load(path, mode: str) -> BatchDecoder:
    return BatchDecoder.load(path, n_parallel=3, n_ctx_per_seq=512, n_batch=128, n_threads=2, speculative=mode)


@pytest.fixture(scope="module", params=MODELS)
def decoders(request):
    """The same model twice: plain decoding, and with n-gram drafts. Whether a draft pays is
    decided from measured step times (server/engine/speculation/cost.py), which a loaded
    machine makes say no: here every draft is made, so that every case verifies some."""
    path = request.getfixturevalue(f"{request.param}_gguf")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(speculator, "best_length", lambda cost, rows, tokens, k_max, p: k_max)
        patch.setattr(speculator, "common_length", lambda cost, ps, lengths, n: max(lengths))  # pad, never cut
        pair = {mode: load(path, mode) for mode in ("off", "ngram")}
        yield pair
        for decoder in pair.values():
            decoder.close()


def answers(decoder: BatchDecoder, jobs: list[tuple[str, SamplingParams]]) -> list[tuple[str, list, Ended]]:
    """Each (prompt, params) decoded, all of them in one batch: (text, log-probabilities, end)."""
    sinks: list[list] = [[] for _ in jobs]
    for (prompt, params), sink in zip(jobs, sinks):
        decoder.add(decoder.tokenize(prompt), params, sink.append)
    decoder.run_until_idle()
    out = []
    for sink in sinks:
        deltas = [e for e in sink if isinstance(e, Delta)]
        end = sink[-1]
        assert isinstance(end, Ended) and end.finish_reason in ("stop", "length"), end
        out.append(("".join(d.text for d in deltas), [lp for d in deltas for lp in d.logprobs], end))
    return out


def same_with_and_without(decoders, jobs: list[tuple[str, SamplingParams]]) -> list[tuple[str, list, Ended]]:
    """Decode `jobs` plainly and with drafts; assert the texts and log-probabilities are equal and
    that every job had drafts kept. Returns the drafted run's answers."""
    plain, drafted = answers(decoders["off"], jobs), answers(decoders["ngram"], jobs)
    for (params_text, plain_lp, _), (text, lp, end), (_, params) in zip(plain, drafted, jobs):
        assert text == params_text, f"{params}: with drafts {text!r}, plain {params_text!r}"
        assert lp == plain_lp, f"{params}: log-probabilities differ"
        assert end.timings.draft_accepted > 0, f"{params}: nothing drafted was kept, so nothing was tested"
    table = decoders["ngram"]._table
    for slot in table.slots:  # idle now: rejected drafts left no KV cells behind
        assert table.cells_for(slot) == len(slot.cached)
    return drafted


@pytest.mark.parametrize("seed", [1, 2024])
def test_sampled_answers_with_a_seed_are_the_same_bytes_with_drafts(decoders, seed):
    jobs = [(LIST, SamplingParams(**s, seed=seed + i, max_tokens=48)) for i, s in enumerate(SAMPLERS)]
    same_with_and_without(decoders, jobs)


def test_greedy_answers_under_penalties_are_the_same_with_drafts(decoders):
    jobs = [
        (LIST, SamplingParams(temperature=0, repeat_penalty=1.3, max_tokens=48)),
        (LIST, SamplingParams(temperature=0, repeat_penalty=1.0, frequency_penalty=0.3, presence_penalty=0.2)),
    ]
    same_with_and_without(decoders, jobs)


def test_json_schema_answers_are_the_same_with_drafts(decoders):
    grammar = schema_to_gbnf(SCHEMA)
    jobs = [
        (EXTRACT, SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=96, grammar=grammar)),
        (EXTRACT, SamplingParams(temperature=0.8, seed=7, max_tokens=96, grammar=grammar)),
        (EXTRACT, SamplingParams(**SAMPLERS[3], seed=3, max_tokens=96, grammar=grammar)),
        # Greedy under penalties: each row's penalties count the kept tokens before it.
        (EXTRACT, SamplingParams(temperature=0, frequency_penalty=0.4, max_tokens=96, grammar=grammar)),
    ]
    for text, _, end in same_with_and_without(decoders, jobs):
        if end.finish_reason == "stop":
            assert set(json.loads(text)) == set(SCHEMA["properties"])


def test_a_grammar_answer_is_the_same_with_drafts(decoders):
    jobs = [
        (LINES, SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=64, grammar=FRUIT_GBNF)),
        (LINES, SamplingParams(temperature=0.6, seed=5, max_tokens=64, grammar=FRUIT_GBNF)),
    ]
    for text, _, _ in same_with_and_without(decoders, jobs):
        assert text.startswith("- oranges\n") and all(line.startswith("- ") for line in text.splitlines())


def test_log_probabilities_are_the_same_floats_with_drafts(decoders):
    jobs = [
        (LIST, SamplingParams(temperature=0, repeat_penalty=1.0, max_tokens=40, logprobs=3)),
        (LIST, SamplingParams(temperature=0.9, seed=9, max_tokens=40, logprobs=0)),
        (EXTRACT, SamplingParams(temperature=0, max_tokens=60, logprobs=2, grammar=schema_to_gbnf(SCHEMA))),
    ]
    for text, logprobs, end in same_with_and_without(decoders, jobs):
        assert len(logprobs) == end.usage.completion_tokens
        assert "".join(lp.piece.decode("utf-8", "replace") for lp in logprobs).startswith(text[:10])


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    temperature=st.floats(0.3, 1.2),
    top_k=st.sampled_from([0, 1, 5, 40]),
    top_p=st.floats(0.5, 1.0),
    min_p=st.sampled_from([0.0, 0.02, 0.1]),
    repeat_penalty=st.sampled_from([1.0, 1.1, 1.3]),
    frequency_penalty=st.sampled_from([0.0, 0.5]),
    presence_penalty=st.sampled_from([0.0, -0.3, 0.4]),
    seed=st.integers(0, 2**32 - 2),  # 2**32 - 1 is llama.cpp's "pick a random seed" (-1 in llama-server, Ollama)
)
def test_any_seeded_sampler_gives_the_same_bytes_with_drafts(decoders, seed, **sampler):
    params = SamplingParams(**sampler, seed=seed, max_tokens=40)
    plain, drafted = answers(decoders["off"], [(LIST, params)]), answers(decoders["ngram"], [(LIST, params)])
    assert drafted[0][0] == plain[0][0]
