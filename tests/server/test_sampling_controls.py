"""The sampling controls programs send: presence/frequency penalties, logit_bias, seed and stop.

The decoder tests compare the greedy fast path (numpy over a view of the logits) with
llama.cpp's own sampler chain on real Gemma logits; the API tests go through both
dialects on the shared engine.
"""

from __future__ import annotations

import numpy as np
import pytest

from server.engine.batching import SamplingParams
from server.engine.sampling import greedy_token, penalize
from tests.server.test_batching import PROMPTS, generate, load

QUESTION = {"query": "Name three fruits.", "temperature": 0, "max_tokens": 8, "repeat_penalty": 1.0}


def test_greedy_token_with_every_penalty_equals_penalizing_a_copy():
    """Presence and frequency penalties (either sign) and a repeat penalty below 1 raise or lower
    recent scores; the fast path must still pick what argmax over fully penalized logits picks."""
    rng = np.random.default_rng(1)
    for case in range(3000):
        logits = rng.integers(-3, 4, size=40).astype(np.float32) * rng.random(40, dtype=np.float32)
        recent = rng.integers(0, 40, size=rng.integers(0, 12)).tolist()
        params = SamplingParams(
            repeat_penalty=float(rng.choice([0.8, 1.0, 1.3])),
            presence_penalty=float(rng.choice([-1.0, 0.0, 0.5])),
            frequency_penalty=float(rng.choice([-0.5, 0.0, 0.7])),
        )
        plain = logits.copy()
        penalize(plain, recent, params)
        assert greedy_token(logits.copy(), recent, params) == int(plain.argmax()), (case, recent, params)


def test_penalize_matches_llama_cpp_arithmetic():
    logits = np.array([2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    penalize(logits, [0, 0, 1], SamplingParams(repeat_penalty=2.0, frequency_penalty=0.25, presence_penalty=0.1))
    # token 0: 2/2 - (2*0.25 + 0.1); token 1: -1*2 - (0.25 + 0.1); others untouched
    assert logits.tolist() == pytest.approx([0.4, -2.35, 0.5, 3.0])


@pytest.fixture(scope="module")
def gemma_decoder(gemma_gguf):
    decoder = load(gemma_gguf)
    yield decoder
    decoder.close()


@pytest.mark.parametrize(
    "controls",
    [
        dict(presence_penalty=1.5),
        dict(frequency_penalty=1.0, repeat_penalty=1.2),
        dict(presence_penalty=-0.5, frequency_penalty=-0.5),
        dict(logit_bias={236772: -100.0, 506: 5.0}),
    ],
    ids=["presence", "frequency+repeat", "negative", "logit_bias"],
)
def test_greedy_fast_path_applies_controls_as_the_llama_cpp_chain_does(gemma_decoder, controls):
    """The greedy fast path skips llama.cpp's chain; a top_k=1 chain over the same logits, with
    llama.cpp's own logit-bias and penalties stages, must pick the same tokens."""
    base = dict(repeat_penalty=1.0, **controls) if "repeat_penalty" not in controls else controls
    prompts = PROMPTS[2:4]  # "1, 2, 3, 4," repeats itself: the penalties bite
    fast, _ = generate(gemma_decoder, prompts, max_tokens=16, temperature=0.0, **base)
    chain, _ = generate(gemma_decoder, prompts, max_tokens=16, temperature=0.7, top_k=1, seed=1, **base)
    for f, c in zip(fast, chain):
        assert f.text == c.text and f.finished.usage == c.finished.usage


def test_penalties_change_a_repetitive_answer(gemma_decoder):
    prompt = ["1, 2, 3, 4,"]
    (plain,), _ = generate(gemma_decoder, prompt, max_tokens=16, temperature=0.0, repeat_penalty=1.0)
    (penalized,), _ = generate(
        gemma_decoder, prompt, max_tokens=16, temperature=0.0, repeat_penalty=1.0, frequency_penalty=2.0
    )
    assert plain.text != penalized.text


def _first_token(decoder, text: str) -> int:
    (rec,), (seq,) = generate(decoder, [text], max_tokens=1, temperature=0.0, repeat_penalty=1.0)
    return seq.tokens[0]


def test_a_bias_of_minus_100_bans_the_token(gemma_decoder):
    first = _first_token(gemma_decoder, PROMPTS[0])
    ban = {first: -100.0}
    # Greedy (the fast path) and sampled (llama.cpp's chain) side by side: both get the ban.
    _, seqs = generate(
        gemma_decoder, [PROMPTS[0]] * 2, max_tokens=8, repeat_penalty=1.0, logit_bias=ban, temperature=0.0
    )
    _, sampled = generate(gemma_decoder, [PROMPTS[0]], max_tokens=8, seed=3, logit_bias=ban)
    assert all(first not in s.tokens for s in seqs + sampled)


def test_respond_takes_the_controls(client):
    plain = client.post("/api/respond", json=QUESTION).json
    biased = client.post("/api/respond", json={**QUESTION, "presence_penalty": 2.0, "frequency_penalty": 2.0})
    assert biased.status_code == 200 and plain["response"]
    sampled = {**QUESTION, "temperature": 1.0, "seed": 42, "max_tokens": 6}
    one, two = (client.post("/api/respond", json=sampled).json["response"] for _ in range(2))
    assert one == two  # the same seed draws the same answer


def test_openai_route_takes_the_controls_and_bans_a_token(client, gemma_engine):
    body = {"messages": [{"role": "user", "content": "Say hello."}], "temperature": 0, "max_tokens": 6}
    first = client.post("/v1/chat/completions", json=body).json["choices"][0]["message"]["content"]
    token = gemma_engine._vocab.tokenize(first, False)[0]
    banned = client.post(
        "/v1/chat/completions", json={**body, "logit_bias": {str(token): -100}, "presence_penalty": 0.5, "seed": 9}
    )
    assert banned.status_code == 200, banned.json
    assert banned.json["choices"][0]["message"]["content"] != first


BAD = [
    ({"presence_penalty": 2.5}, "presence_penalty", "at most 2"),
    ({"frequency_penalty": "x"}, "frequency_penalty", "number"),
    ({"logit_bias": [1, 2]}, "logit_bias", "object"),
    ({"logit_bias": {"hello": 1}}, "logit_bias", "token ids"),
    ({"logit_bias": {"5": 101}}, "logit_bias.5", "at most 100"),
    ({"logit_bias": {"5": True}}, "logit_bias.5", "number"),
    ({"logit_bias": {"999999999": -100}}, "logit_bias", "below"),
    ({"seed": 2**32}, "seed", "at most"),
]


@pytest.mark.parametrize("extra, field, words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_controls_are_400_naming_the_field(client, extra, field, words):
    for path, body in (
        ("/api/respond", {"query": "hi", **extra}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], **extra}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 400, (path, response.json)
        error = response.json["error"]
        assert error.get("field", error.get("param")) == field and words in error["message"], (path, error)
