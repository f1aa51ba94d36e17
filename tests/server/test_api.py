"""The /api/respond contract and every error, through the Flask test client on real Gemma inference."""

from __future__ import annotations

import json
import logging
import time

import pytest

from server.engine.engine import Engine
from server.engine.request import Message
from server.http.respond_schema import validate_respond
from server.model.files import ModelChoice
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS, make_client, metric

QUESTION = {"query": "What is the capital of France?", "temperature": 0, "seed": 7, "max_tokens": 8}


def sse_events(response) -> list[dict]:
    text = response.get_data(as_text=True)
    return [json.loads(chunk[len("data: ") :]) for chunk in text.split("\n\n") if chunk.startswith("data: ")]


@pytest.fixture(scope="module")
def plain(app):
    """One deterministic answer, reused by the tests that compare against it."""
    response = app.test_client().post("/api/respond", json=QUESTION)
    assert response.status_code == 200, response.json
    return response.json


def test_plain_answer_follows_the_contract(plain):
    assert set(plain) >= {"response", "model", "finish_reason", "usage", "timings"}
    assert isinstance(plain["response"], str) and plain["response"]
    assert plain["model"] == "gemma-3-270m-q4_k_m"  # the library name of the model that answered
    assert plain["finish_reason"] in ("stop", "length")
    usage = plain["usage"]
    assert 0 < usage["completion_tokens"] <= QUESTION["max_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert plain["timings"]["prompt_ms"] > 0 and plain["timings"]["tokens_per_second"] >= 0
    if plain["finish_reason"] == "length":
        assert usage["completion_tokens"] == QUESTION["max_tokens"]


def test_temperature_zero_with_a_seed_is_deterministic(client, plain):
    again = client.post("/api/respond", json=QUESTION).json
    assert again["response"] == plain["response"]
    assert again["usage"] == plain["usage"]


def test_stream_sends_deltas_then_one_final_event(client, plain):
    response = client.post("/api/respond", json={**QUESTION, "stream": True})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse_events(response)
    deltas, final = events[:-1], events[-1]
    assert deltas and all(e["type"] == "delta" and e["text"] for e in deltas)
    assert "".join(e["text"] for e in deltas) == plain["response"]
    assert final["type"] == "done"
    assert final["finish_reason"] == plain["finish_reason"] and final["usage"] == plain["usage"]
    assert set(final["timings"]) >= {"prompt_ms", "generation_ms", "tokens_per_second"}


def test_streamed_text_never_splits_a_utf8_character(client):
    body = {
        "query": "Écris une phrase avec des emoji 🎉 et des caractères chinois 你好.",
        "stream": True,
        "temperature": 1.0,
        "seed": 3,
        "max_tokens": 16,
    }
    events = sse_events(client.post("/api/respond", json=body))
    assert events[-1]["type"] == "done"
    assert not any("\ufffd" in e.get("text", "") for e in events)


def test_stop_string_ends_the_answer_before_it(client, plain):
    words = plain["response"].split()
    if len(words) < 2:
        pytest.skip("the answer is too short to pick a stop string from")
    stop = words[1]
    answer = client.post("/api/respond", json={**QUESTION, "stop": [stop]}).json
    assert answer["finish_reason"] == "stop"
    assert answer["response"] == plain["response"][: plain["response"].index(stop)]


BAD_BODIES = [
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": 3}, "query"),
    ({}, "query"),
    ({"query": "hi", "max_tokens": 0}, "max_tokens"),
    ({"query": "hi", "max_tokens": 10_000}, "max_tokens"),
    ({"query": "hi", "max_tokens": "8"}, "max_tokens"),
    ({"query": "hi", "max_tokens": True}, "max_tokens"),
    ({"query": "hi", "temperature": -0.1}, "temperature"),
    ({"query": "hi", "temperature": 2.5}, "temperature"),
    ({"query": "hi", "top_p": 1.5}, "top_p"),
    ({"query": "hi", "top_k": 2.5}, "top_k"),
    ({"query": "hi", "min_p": -1}, "min_p"),
    ({"query": "hi", "repeat_penalty": 0}, "repeat_penalty"),
    ({"query": "hi", "seed": -1}, "seed"),
    ({"query": "hi", "stop": "x"}, "stop"),
    ({"query": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"query": "hi", "stop": [""]}, "stop[0]"),
    ({"query": "hi", "stream": "yes"}, "stream"),
    ({"query": "hi", "system": ["x"]}, "system"),
    ({"query": "hi", "history": {"role": "user"}}, "history"),
    ({"query": "hi", "history": [{"role": "robot", "content": "x"}]}, "history[0].role"),
    ({"query": "hi", "history": [{"role": "user"}]}, "history[0]"),
    ({"query": "hi", "history": [{"role": "user", "content": 5}]}, "history[0].content"),
    ({"query": "hi", "colour": "blue"}, "colour"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES, ids=[f for _, f in BAD_BODIES])
def test_invalid_fields_are_named_in_a_400(client, body, field):
    response = client.post("/api/respond", json=body)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "invalid_request" and error["field"] == field
    assert field.split("[")[0] in error["message"]


@pytest.mark.parametrize("data", ["{not json", "", "[1, 2]", "null"])
def test_bodies_that_are_not_a_json_object_are_400(client, data):
    response = client.post("/api/respond", data=data, content_type="application/json")
    assert response.status_code == 400
    assert response.json["error"]["type"] == "invalid_request"


def test_validation_fills_defaults_and_keeps_values():
    req = validate_respond({"query": "hi", "temperature": 1, "stop": ["\n"]}, 8, 256)
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.stop, req.stream) == (8, 1.0, ("\n",), False)
    assert req.messages == (Message("user", "hi"),) and req.prompt is None


def test_body_over_the_limit_is_413(gemma_engine):
    client = make_client(gemma_engine, max_body_bytes=2048)
    response = client.post("/api/respond", json={"query": "x" * 4096})
    assert response.status_code == 413
    assert response.json["error"]["type"] == "body_too_large"


def test_prompt_that_cannot_fit_is_400_with_token_counts(client):
    response = client.post("/api/respond", json={"query": "word " * 400, "max_tokens": 200})
    assert response.status_code == 400
    error = response.json["error"]
    assert error["type"] == "prompt_too_long"
    assert error["n_ctx"] == 512 and error["max_tokens"] == 200
    assert error["prompt_tokens"] + 200 > 512


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic c2VjcmV0", "Bearer"])
def test_api_key_is_required_when_set(gemma_engine, header):
    client = make_client(gemma_engine, api_key="s3cret")
    headers = {"Authorization": header} if header else {}
    response = client.post("/api/respond", json={"query": "hi"}, headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["type"] == "unauthorized"
    assert "s3cret" not in response.get_data(as_text=True)


def test_right_api_key_is_accepted(gemma_engine):
    client = make_client(gemma_engine, api_key="s3cret")
    response = client.post(
        "/api/respond", json={**QUESTION, "max_tokens": 2}, headers={"Authorization": "Bearer s3cret"}
    )
    assert response.status_code == 200


def test_503_while_loading(server_settings, gemma_gguf):
    loading = Engine(server_settings, ModelChoice(gemma_gguf, is_default=True))  # never started
    client = make_client(loading)
    health = client.get("/api/health")
    assert health.status_code == 503 and health.json["status"] == "loading"
    response = client.post("/api/respond", json={"query": "hi"})
    assert response.status_code == 503 and response.json["error"]["type"] == "loading"
    assert "Retry-After" in response.headers


def test_full_queue_is_503_with_retry_after(client, gemma_engine):
    req = validate_respond({"query": "Tell me a long story.", "max_tokens": 200}, 8, 256)
    # Every slot running and queue_size (2) waiting: the queue is full for real.
    held = [gemma_engine.submit(req) for _ in range(TEST_SETTINGS["parallel"] + TEST_SETTINGS["queue_size"])]
    try:
        response = client.post("/api/respond", json={"query": "hi"})
        assert response.status_code == 503
        assert response.json["error"]["type"] == "queue_full"
        assert int(response.headers["Retry-After"]) > 0
    finally:
        for generation in held:
            generation.cancel()
        for generation in held:
            list(generation)  # wait until each has ended


def test_request_timeout_is_504_and_the_engine_moves_on(gemma_engine):
    client = make_client(gemma_engine, request_timeout=1)
    response = client.post("/api/respond", json={"query": "Tell me a long story.", "max_tokens": 250})
    assert response.status_code == 504
    assert response.json["error"]["type"] == "timeout"
    text = client.get("/metrics").get_data(as_text=True)
    # The engine stopped the generation at the deadline (the client's own wait gives up later
    # with a 504 too, so the status alone would not show it) ...
    assert metric(text, "llama_server_generations_total", 'finish_reason="timeout"') == 1
    assert metric(text, "llama_server_generated_tokens_total") < 250
    # ... and goes on answering (with the usual timeout: a busy machine may need more than 1 s).
    after = make_client(gemma_engine).post("/api/respond", json={**QUESTION, "max_tokens": 2})
    assert after.status_code == 200 and after.json["usage"]["completion_tokens"] >= 1


def test_dropping_a_stream_cancels_its_generation(gemma_engine):
    client = make_client(gemma_engine)
    response = client.post("/api/respond", json={"query": "Tell me a long story.", "max_tokens": 250, "stream": True})
    next(iter(response.response))  # the first delta has arrived: the generation is running
    response.close()  # what the server does when a write to a gone client fails
    list(gemma_engine.submit(validate_respond({"query": "hi", "max_tokens": 1}, 8, 256)))  # queue drained
    text = client.get("/metrics").get_data(as_text=True)
    assert metric(text, "llama_server_generations_total", 'finish_reason="cancelled"') == 1
    assert metric(text, "llama_server_generated_tokens_total") < 250


class _CorruptsFirstPrompt:
    """The real decoder, except that the first prompt it is given ends in a token id the
    vocabulary does not have: llama_decode really fails on that batch, as on a broken model."""

    def __init__(self, decoder):
        self.decoder, self.corrupted = decoder, False

    def __getattr__(self, name):
        return getattr(self.decoder, name)

    def add(self, prompt, params, on_event):
        if not self.corrupted:
            self.corrupted = True
            prompt = prompt[:-1] + [10**8]
        return self.decoder.add(prompt, params, on_event)


def test_a_failing_generation_is_a_generic_500_and_the_worker_survives(gemma_engine, gemma_gguf, caplog):
    settings = Settings(**TEST_SETTINGS)
    engine = Engine(settings, ModelChoice(gemma_gguf, True), decoder=_CorruptsFirstPrompt(gemma_engine._decoder))
    engine.start()
    assert engine.wait_ready(60)
    client = make_client(engine)
    with caplog.at_level(logging.ERROR):
        failed = client.post("/api/respond", json=QUESTION)
    assert failed.status_code == 500
    assert failed.json["error"]["type"] == "internal_error"
    body = failed.get_data(as_text=True)
    assert "llama_decode" not in body and "Traceback" not in body
    # The cause is in the log, for the operator (written by the worker just after the answer ended).
    deadline = time.monotonic() + 10
    while "llama_decode failed" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.02)
    assert client.post("/api/respond", json={**QUESTION, "max_tokens": 2}).status_code == 200
    engine.close()


def test_health_reports_the_model_and_offload(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    body = response.json
    assert body["status"] == "ok" and body["model"] == "Gemma 3 270m"
    assert body["quantization"] == "Q4_K_M" and body["n_ctx"] == 512
    assert body["file"].endswith(".gguf") and body["backend"] == "CPU"
    assert body["offload"]["n_gpu_layers"] == 0 and body["offload"]["total_layers"] == 19
    assert body["parallel"]["n_parallel"] == 2 and body["parallel"]["mode"] == "fixed"
    assert body["parallel"]["kv_bytes_per_token"] == 18 * 2 * 256 * 2  # layers x (K + V) x width x f16
    assert body["slots"] == {"busy": 0, "total": 2} and body["kv_cells_used"] >= 0
    assert set(body["prompt_cache"]) == {"prompts", "bytes", "limit_bytes", "hits"}
    assert body["prompt_cache"]["limit_bytes"] == body["prompt_cache_mib"] << 20 > 0
    assert body["default_model"] is True and "make quantize" in body["notice"]
    assert body["queue_depth"] == 0


def test_metrics_count_requests_tokens_and_latency(client):
    client.post("/api/respond", json={**QUESTION, "max_tokens": 2})
    client.post("/api/respond", json={"query": ""})
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert metric(text, "llama_server_requests_total", 'endpoint="respond",status="200"') >= 1
    assert metric(text, "llama_server_requests_total", 'endpoint="respond",status="400"') >= 1
    assert metric(text, "llama_server_prompt_tokens_total") > 0
    assert metric(text, "llama_server_generated_tokens_total") > 0
    assert metric(text, "llama_server_time_to_first_token_seconds_count") >= 1
    assert metric(text, "llama_server_generation_seconds_count") >= 1
    assert 'llama_server_queue_depth{model="gemma-3-270m-q4_k_m"} 0.0' in text
    # Token and request counts carry the model that served them.
    assert metric(text, "llama_server_generated_tokens_total", 'model="gemma-3-270m-q4_k_m"') > 0
    assert metric(text, "llama_server_requests_total", 'endpoint="respond",status="200",model="gemma-3-270m-q4_k_m"')


def test_unknown_route_and_wrong_method_are_json(client):
    assert client.get("/nope").json["error"]["type"] == "not_found"
    assert client.get("/api/respond").json["error"]["type"] == "method_not_allowed"
