"""Concurrent clients through the HTTP API on real Gemma inference (Flask test client, 2 slots).

More requests than slots all complete, and each greedy answer equals the one
the same question gets alone, or differs only where two candidate tokens were
a near-tie (batched arithmetic may add the same terms in another order): such
differences are measured against an independent reference and printed, never
hidden. A client that drops its stream frees its slot for a waiting request.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from server.model.prompt import build_messages
from tests.server.conftest import TEST_SETTINGS, make_client, metric

QUESTIONS = ["What is the capital of France?", "Name three colours.", "What is 2 + 2?", "Say hello in Spanish."]
GREEDY = {"temperature": 0, "repeat_penalty": 1.0, "max_tokens": 8}
# Logit gap under which two candidates count as a near-tie (as in test_batching.py).
NEAR_TIE = 0.5


def ask(app, query: str, **extra) -> dict:
    response = app.test_client().post("/api/respond", json={"query": query, **GREEDY, **extra})
    assert response.status_code == 200, response.json
    return response.json


def greedy_divergence(engine, gguf, query: str, answer: str) -> tuple[int, float] | None:
    """Where `answer` leaves the greedy path of a reference llama.cpp run of the same prompt,
    and the logit gap between the two best tokens there; None when it never does."""
    from llama_cpp import Llama

    tokens = engine._format.tokens(build_messages(engine.settings.system_prompt, [], query), engine.vocab)
    ref = Llama(str(gguf), n_ctx=256, n_threads=2, logits_all=True, verbose=False)  # scores kept
    try:
        ref.eval(tokens)
        produced, target = b"", answer.encode()
        for i in range(GREEDY["max_tokens"]):
            logits = np.asarray(ref.scores[ref.n_tokens - 1])
            second, best = np.argsort(logits)[-2:]
            produced += ref.detokenize([int(best)])
            if not target.startswith(produced) and not produced.startswith(target):
                return i, float(logits[best] - logits[second])
            ref.eval([int(best)])
        return None
    finally:
        ref.close()


def test_more_requests_than_slots_all_complete_with_the_answers_they_get_alone(app, gemma_engine, gemma_gguf):
    slots = TEST_SETTINGS["parallel"]
    assert len(QUESTIONS) == slots + TEST_SETTINGS["queue_size"]  # every slot busy, every queue place taken
    alone = [ask(app, q) for q in QUESTIONS]
    before = app.test_client().get("/metrics").get_data(as_text=True)
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: ask(app, q), QUESTIONS))
    after = app.test_client().get("/metrics").get_data(as_text=True)

    assert all(t["finish_reason"] in ("stop", "length") for t in together)
    assert all(t["usage"]["prompt_tokens"] == a["usage"]["prompt_tokens"] for a, t in zip(alone, together))
    # Two of them waited for a slot.
    assert sorted(t["timings"]["queue_ms"] for t in together)[-1] > max(a["timings"]["queue_ms"] for a in alone)
    differ = []
    for q, a, t in zip(QUESTIONS, alone, together):
        if a["response"] != t["response"]:
            for which, text in (("alone", a["response"]), ("together", t["response"])):
                where = greedy_divergence(gemma_engine, gemma_gguf, q, text)
                if where is not None:
                    differ.append((q, which, *where))
    print(f"\ngreedy answers that differ beside others (question, run, token, logit gap): {differ}")
    assert all(gap < NEAR_TIE for *_, gap in differ), differ
    assert len({q for q, *_ in differ}) <= slots, differ

    # Batching really happened: some llama_decode steps carried both slots' tokens.
    name = "llama_server_batch_sequences"
    steps = metric(after, f"{name}_count") - metric(before, f"{name}_count")
    single = metric(after, f"{name}_bucket", 'le="1.0"') - metric(before, f"{name}_bucket", 'le="1.0"')
    assert steps > 0 and single < steps
    tokens = metric(after, "llama_server_batch_tokens_sum") - metric(before, "llama_server_batch_tokens_sum")
    assert tokens > steps  # more than one token per step on average


def wait_for(check, limit: float = 30.0):
    deadline = time.monotonic() + limit
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)
    return result


def test_a_dropped_stream_frees_its_slot_for_a_waiting_request(gemma_engine):
    client = make_client(gemma_engine)
    long = {"query": "Tell me a long story about the sea.", "max_tokens": 200, "stream": True, "temperature": 0}
    # The test client returns a streamed response once its first event is there.
    streams = [client.post("/api/respond", json=long) for _ in range(TEST_SETTINGS["parallel"])]
    pool = ThreadPoolExecutor(1)
    waiting = pool.submit(make_client(gemma_engine).post, "/api/respond", json=long)
    try:
        wait_for(lambda: gemma_engine.queue_depth() == 1)  # queued behind the two running
        health = client.get("/api/health").json
        assert health["slots"] == {"busy": 2, "total": 2} and health["queue_depth"] == 1
        cancelled = metric(
            client.get("/metrics").get_data(as_text=True), "llama_server_generations_total", 'finish_reason="cancelled"'
        )

        streams[0].close()  # what the server does when a write to a gone client fails
        third = waiting.result(timeout=30)  # the waiting request got the freed slot: it streams
        assert third.status_code == 200 and next(iter(third.response))
        health = client.get("/api/health").json
        assert health["queue_depth"] == 0 and health["slots"]["busy"] == 2
        text = client.get("/metrics").get_data(as_text=True)
        assert metric(text, "llama_server_generations_total", 'finish_reason="cancelled"') == cancelled + 1
        assert metric(text, "llama_server_slots_busy") == 2 and metric(text, "llama_server_slots_total") == 2
        assert metric(text, "llama_server_kv_cells_used") > 0
        samples = {line.split(" ")[0].split("{")[0] for line in text.splitlines() if not line.startswith("#")}
        assert {
            "llama_server_prompt_cache_prompts",
            "llama_server_prompt_cache_bytes",
            "llama_server_prompt_cache_limit_bytes",
            "llama_server_prompt_cache_hits_total",
        } <= samples
    finally:
        for s in streams:
            s.close()  # closing twice is harmless: cancel() of an ended generation does nothing
        waiting.result(timeout=30).close()
        pool.shutdown()
    # Within a step or so every slot is free again; idle slots keep their prompt for reuse. The
    # decoder frees a slot in the step that ends it, the engine drops its entry when that step's
    # events are delivered (after the next launch on a GPU), so both are awaited, not one then the other.
    wait_for(
        lambda: client.get("/api/health").json["slots"]["busy"] == 0
        and gemma_engine.active == 0
        and gemma_engine.queue_depth() == 0
    )


def test_a_repeated_prompt_reuses_its_cached_prefix(app):
    def cached() -> float:
        return metric(
            app.test_client().get("/metrics").get_data(as_text=True), "llama_server_prompt_tokens_cached_total"
        )

    before = cached()
    first = ask(app, "Which planet is known as the red planet?")
    again = ask(app, "Which planet is known as the red planet?")
    after = cached()
    assert again["response"] == first["response"]
    assert after - before >= again["usage"]["prompt_tokens"] - 1  # all but the last prompt token


def test_requests_arriving_together_share_their_first_step(gemma_engine, monkeypatch):
    """After taking a request the engine waits a moment for companions (server/engine/engine.py,
    GATHER_*). Gemma's steps are so short that the real window is under a millisecond;
    widened here to 600 ms, a second request sent 150 ms after the first must catch it
    (without the wait, the first one's prompt takes a few tens of milliseconds)."""
    import server.engine.engine
    from server.http.respond_schema import validate_respond

    monkeypatch.setattr(server.engine.engine, "GATHER_SHARE", 1000.0)
    monkeypatch.setattr(server.engine.engine, "GATHER_MAX_S", 0.6)
    list(gemma_engine.submit(validate_respond({"query": "Hi.", **GREEDY}, 8, 256)))  # a typical step is known
    wait_for(lambda: gemma_engine.active == 0)
    firsts: dict[int, float] = {}
    sent: dict[int, float] = {}

    def ask(i: int) -> None:
        time.sleep(0.15 * i)
        sent[i] = time.monotonic()
        generation = gemma_engine.submit(validate_respond({"query": QUESTIONS[i], **GREEDY}, 8, 256))
        for _ in generation:
            firsts.setdefault(i, time.monotonic())

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(ask, [0, 1]))
    assert firsts[0] > sent[1]  # the first request's first token waited for the second one
