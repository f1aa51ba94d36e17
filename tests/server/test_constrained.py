"""Constrained decoding in the batch decoder, on real Gemma 3 270M inference.

A grammar belongs to one sequence: a constrained and an unconstrained request share
every step, the unconstrained one answers exactly as it does alone, and the
constrained one always matches its grammar. The cheap reject-then-mask path
(best-logit subsets first) must pick what masking the whole vocabulary picks.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from server.engine.batching import SamplingParams
from server.engine.constraints.grammar import Candidates, LlamaGrammar
from server.engine.constraints.sampler import WHITESPACE_RUN, ConstrainedSampler
from server.model.schema_grammar import schema_to_gbnf
from tests.server.test_batching import Recorder, load

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 100, "maximum": 105},
        "ratio": {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 0.75},
        "pet": {"enum": ["cat", "dog"]},
    },
    "required": ["name", "age", "ratio", "pet"],
    "additionalProperties": False,
}
GREEDY = dict(temperature=0.0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def decoder(gemma_gguf):
    decoder = load(gemma_gguf, n_parallel=2, n_ctx_per_seq=256)
    yield decoder
    decoder.close()


def run(decoder, prompts_params):
    recs = [Recorder() for _ in prompts_params]
    for (prompt, params), rec in zip(prompts_params, recs):
        decoder.add(decoder.tokenize(prompt), params, rec)
    shared = 0
    while not decoder.idle:
        decoder.step()
        shared = max(shared, decoder.stats().last_batch_sequences)
    decoder.clear_cache()
    return recs, shared


def test_a_constrained_and_a_free_request_share_steps_and_keep_their_answers(decoder):
    gbnf = schema_to_gbnf(SCHEMA)
    question = "Describe a person as JSON:"
    free = SamplingParams(max_tokens=20, **GREEDY)
    (alone,), _ = run(decoder, [(question, free)])
    constrained_params = SamplingParams(max_tokens=60, grammar=gbnf, **GREEDY)
    (constrained, beside), shared = run(decoder, [(question, constrained_params), (question, free)])
    assert shared == 2  # one llama_decode carried both
    assert beside.text == alone.text  # the free request answered exactly as alone
    assert constrained.finished.finish_reason == "stop", constrained.text
    answer = json.loads(constrained.text)
    jsonschema.validate(answer, SCHEMA)  # the bounds included: 100..105, (0.5, 0.75)


def test_sampled_constrained_answers_validate(decoder):
    gbnf = schema_to_gbnf(SCHEMA)
    recs, _ = run(
        decoder,
        [("A person in JSON:", SamplingParams(max_tokens=60, grammar=gbnf, temperature=1.0, seed=s)) for s in (1, 2)],
    )
    for rec in recs:
        assert rec.finished.finish_reason == "stop", rec.text
        jsonschema.validate(json.loads(rec.text), SCHEMA)


def test_a_run_of_whitespace_is_cut(decoder):
    """A grammar that allows blank space forever, and a bias that makes the model want nothing
    else: the run stops at WHITESPACE_RUN characters and the grammar's way out is taken."""
    space, newline = decoder.tokenize(" ", add_bos=False)[0], decoder.tokenize("\n", add_bos=False)[0]
    params = SamplingParams(
        max_tokens=60, grammar='root ::= [ \\n]* "done"', logit_bias={space: 50.0, newline: 50.0}, **GREEDY
    )
    (rec,), _ = run(decoder, [("Say done.", params)])
    assert rec.text.endswith("done") and rec.text[:-4].strip() == ""
    assert WHITESPACE_RUN <= len(rec.text) - 4 < WHITESPACE_RUN + 8, repr(rec.text)


def test_the_answer_ends_when_the_grammar_is_complete(decoder):
    params = SamplingParams(max_tokens=30, grammar='root ::= "yes" | "no"', **GREEDY)
    (rec,), _ = run(decoder, [("Is the sky blue?", params)])
    assert rec.text in ("yes", "no") and rec.finished.finish_reason == "stop"


def test_subset_masking_picks_what_masking_the_whole_vocabulary_picks(decoder):
    """The reject-then-mask shortcut against the plain method, on random logits over Gemma's
    262k-token vocabulary, for greedy and for a top-k draw with a fixed seed; one grammar
    allows few tokens (whole-vocabulary masks), one many (the best-logit subsets suffice)."""
    vocab, n, eos = decoder._vocab, decoder.n_vocab, decoder.token_eos
    rng = np.random.default_rng(3)
    whole = Candidates(n)
    digits = [decoder.tokenize(str(d), add_bos=False)[0] for d in range(10)]
    for case in range(12):
        gbnf = "root ::= [0-9]+" if case < 4 or case >= 8 else "root ::= [a-z]+"
        logits = rng.normal(size=n).astype(np.float32) * 3
        if case >= 8:  # the digits far ahead: a few allowed tokens, and min-p drops everything else
            logits[digits] += 25
        # Sampled: top-k with min-p off, or min-p with top-p off (see constrained.py's docstring).
        sampled = dict(top_k=5, min_p=0.0) if case % 4 == 1 else dict(top_k=40, min_p=0.05, top_p=1.0)
        params = SamplingParams(repeat_penalty=1.0, temperature=0.0 if case % 2 == 0 else 0.8, seed=case, **sampled)
        index = decoder.vocab_index()
        fast = ConstrainedSampler(LlamaGrammar(vocab, gbnf), params, n, eos, decoder._pieces, Candidates(n), index)
        plain = ConstrainedSampler(LlamaGrammar(vocab, gbnf), params, n, eos, decoder._pieces, Candidates(n), index)
        got = fast.sample(logits.copy(), [])
        # The plain method: the same first draw (so the seeded generator is where fast's is), then
        # mask every token and draw again.
        if plain._chain:
            plain._draw_all(logits.copy())
        whole.fill(whole.every_id, logits)
        whole.logits[index.textless] = -np.inf  # never drawn: the answer could not show them
        plain.grammar.mask(whole)
        assert got == plain._draw(whole), case
        assert plain.grammar.allows(got)
        fast.free()
        plain.free()
