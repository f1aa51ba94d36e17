"""Batch-invariant greedy decoding through the HTTP API, on two real models (Gemma 3 270M, SmolLM2).

Default settings (prefix cache, RAM prompt cache, flash attention auto) with four
slots. Eight prompts of different lengths, two of them long enough that their
tokens sit past position 256 (where flash attention would split a lone row's KV
cells across threads), are answered at temperature 0:

  alone     one request at a time, through /v1 (with log-probabilities)
  together  all eight at once, arriving 50 ms apart, so up to three others share
            every decode step and new prompts are evaluated while others decode;
            half through /api/respond, half through /v1
  restored  each again, alone: its prompt is now in a slot or in the RAM prompt
            cache, and comes back from there (the last prompt token decoded alone)

Every answer must be byte-identical to the alone one, and every log-probability
bit-identical (server/engine/invariance.py says why that holds on the CPU); so must
a sampled answer with a fixed seed. And speculative decoding's verified drafts must
give the text of plain decoding.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from server.engine.batching import BatchDecoder, SamplingParams
from server.engine.engine import Engine
from server.engine.request import Delta
from server.engine.speculation import speculator
from server.http.app import create_app
from server.model.files import ModelChoice
from server.settings import Settings

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))
from _invariance_prompts import PROMPTS  # noqa: E402  (one list with bench/determinism.py)

SETTINGS = dict(n_ctx=1024, parallel=4, max_tokens=24, max_tokens_ceiling=64, queue_size=8, request_timeout=120)
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "max_tokens": 24}
SAMPLED = {"temperature": 0.9, "seed": 11}
# An edit task: its answer repeats runs of the prompt, which prompt lookup drafts.
EDIT = "Repeat this list exactly: apples, oranges, bananas, pears, grapes, cherries, plums.\nList: apples,"


@pytest.fixture(scope="module", params=["gemma", "smollm2"])
def app(request):
    path = request.getfixturevalue(f"{request.param}_gguf")
    settings = Settings(**SETTINGS)
    engine = Engine(settings, ModelChoice(path, is_default=False)).start()
    assert engine.wait_ready(300), f"the engine did not load {request.param}"
    yield create_app(settings, engine), engine
    engine.close()


def ask_v1(client, prompt: str, **sampling) -> tuple[str, list[float]]:
    body = {"messages": [{"role": "user", "content": prompt}], "logprobs": True, **GREEDY, **sampling}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.get_json()
    choice = r.get_json()["choices"][0]
    return choice["message"]["content"], [t["logprob"] for t in choice["logprobs"]["content"]]


def ask_respond(client, prompt: str) -> tuple[str, None]:
    r = client.post("/api/respond", json={"query": prompt, **GREEDY})
    assert r.status_code == 200, r.get_json()
    return r.get_json()["response"], None


def together(app) -> dict[int, tuple[str, list[float] | None]]:
    """All prompts at once, 50 ms apart, even ones through /api/respond, odd ones through /v1;
    and (as -1) the first one sampled with a seed."""
    answers: dict[int, tuple[str, list[float] | None]] = {}

    def one(i: int) -> None:
        time.sleep(0.05 * i)
        if i == len(PROMPTS):
            answers[-1] = ask_v1(app.test_client(), PROMPTS[0], **SAMPLED)
        else:
            answers[i] = (ask_respond if i % 2 == 0 else ask_v1)(app.test_client(), PROMPTS[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS) + 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return answers


def test_greedy_answers_do_not_depend_on_the_batch(app):
    app, engine = app
    client = app.test_client()
    assert len(engine.tokenize(PROMPTS[2])) > 300  # its rows reach far into the context
    alone = {i: ask_v1(client, p) for i, p in enumerate(PROMPTS)}
    assert all(text and logprobs for text, logprobs in alone.values())
    sampled = ask_v1(client, PROMPTS[0], **SAMPLED)

    shared = together(app)
    hits = engine.decoder_stats().prompt_cache_hits
    restored = {i: ask_v1(client, p) for i, p in enumerate(PROMPTS)}
    assert engine.decoder_stats().prompt_cache_hits > hits, "some prompts came back from the RAM prompt cache"

    for i in range(len(PROMPTS)):
        assert shared[i][0] == alone[i][0], f"prompt {i} together with others"
        assert shared[i][1] in (None, alone[i][1]), f"prompt {i}'s log-probabilities together with others"
        assert restored[i] == alone[i], f"prompt {i} after its prefix came back from a cache"
    assert shared[-1] == sampled, "sampled with a seed: the same draws from the same logits"


@pytest.mark.parametrize("model", ["gemma", "smollm2"])
def test_verified_drafts_give_the_text_of_plain_decoding(model, request, monkeypatch):
    """Speculation checks a draft in one batch with everyone's tokens: with batch-invariant
    logits, what it keeps is exactly what plain decoding would have produced. Every draft is
    made (the cost check, which a loaded machine makes say no, is not what is tested here)."""
    monkeypatch.setattr(speculator, "best_length", lambda cost, rows, tokens, k_max, p: k_max)
    monkeypatch.setattr(speculator, "common_length", lambda cost, ps, lengths, n: max(lengths))
    path = request.getfixturevalue(f"{model}_gguf")
    prompts = [EDIT, "Once upon a time, in a land far away, there lived a", PROMPTS[2]]
    texts = {}
    for mode in ("off", "ngram"):
        decoder = BatchDecoder.load(path, n_parallel=2, n_ctx_per_seq=1024, n_threads=2, speculative=mode)
        try:
            sinks: list[list] = [[] for _ in prompts]
            for prompt, sink in zip(prompts, sinks):
                decoder.add(decoder.tokenize(prompt), SamplingParams(**GREEDY), sink.append)
            decoder.run_until_idle()
            texts[mode] = ["".join(e.text for e in sink if isinstance(e, Delta)) for sink in sinks]
            drafted = decoder.stats().draft_accepted
        finally:
            decoder.close()
    assert drafted > 0, "some drafts were kept"
    assert texts["ngram"] == texts["off"]
