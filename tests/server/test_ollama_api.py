"""Ollama's routes in-process on the shared Gemma engine: validation, error shapes, model names.

Most cases send no messages (Ollama's "load the model" request), so the options are
checked without generating; the official client's tests against real gunicorn are in
test_ollama_client.py.
"""

from __future__ import annotations

import json

import pytest

from tests.server.conftest import make_client, metric

NAME = "gemma-3-270m-q4_k_m"
HI = [{"role": "user", "content": "Hi"}]
COUNT = "Counting from one to one thousand in words: one, two, three, four, five,"


def load(client, **body):
    """A body with no messages: every field is checked, nothing is generated."""
    return client.post("/api/chat", json={"model": NAME, "messages": [], **body})


def error_of(r) -> str:
    body = r.get_json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body  # Ollama's shape
    return body["error"]


def test_an_empty_conversation_loads_the_model(client):
    r = load(client, keep_alive="5m", options={"num_ctx": 512, "num_thread": 2, "presence_penalty": 0})
    body = r.get_json()
    assert r.status_code == 200 and body["done"] is True and body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""} and body["model"] == NAME


@pytest.mark.parametrize("name", [NAME, f"{NAME}:latest", NAME.upper()])
def test_the_served_name_with_or_without_latest(client, name):
    assert client.post("/api/generate", json={"model": name}).status_code == 200


def test_another_model_name_is_404_naming_the_served_one(client):
    r = client.post("/api/chat", json={"model": "llama3.2", "messages": HI})
    assert r.status_code == 404 and NAME in error_of(r) and "llama3.2" in error_of(r)
    assert client.post("/api/show", json={"model": "llama3.2"}).status_code == 404


@pytest.mark.parametrize(
    "body, words",
    [
        ({"options": {"temperature": 9}}, "'options.temperature' must be at most 2.0"),
        ({"options": {"temperature": "hot"}}, "'options.temperature' must be a number"),
        ({"options": {"num_ctx": 513}}, "'options.num_ctx' must be at most 512"),
        ({"options": {"num_predict": 0}}, "'options.num_predict' must be -1, -2 or at least 1"),
        ({"options": {"num_predict": 100_000}}, "'options.num_predict' must be at most 256"),
        ({"options": {"stop": ["a", 1]}}, "'options.stop[1]' must be a string"),
        ({"options": {"temprature": 0.5}}, "unknown option 'options.temprature'"),
        ({"options": {"presence_penalty": 2.5}}, "'options.presence_penalty' must be at most 2.0"),
        ({"options": {"mirostat": 2}}, "only options.mirostat=0 is supported"),
        ({"options": {"num_gpu": "all"}}, "'options.num_gpu' must be an integer"),
        ({"format": "yaml"}, "'format' must be \"json\" or a JSON Schema object"),
        ({"format": {"type": "array", "uniqueItems": True}}, "'format.uniqueItems'"),
        ({"tools": [{"type": "function", "function": {"name": "f g"}}]}, "'tools[0].function.name' must be 1-64"),
        ({"tools": [{"type": "function"}]}, "'tools[0].function' is required and must be an object"),
        ({"think": True}, "does not support thinking"),
        ({"stream": "yes"}, "'stream' must be a boolean"),
        ({"colour": 1}, "unknown field 'colour'"),
        ({"messages": [{"role": "tool", "content": "11 C", "tool_name": 3}]}, "'messages[0].tool_name' must be a"),
        (
            {"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
            "'messages[0].tool_calls[0].function.arguments' must be an object",
        ),
        ({"messages": [{"role": "user", "content": "x", "tool_calls": [{}]}]}, "only an assistant message has"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "'messages[0].role' must be one of"),
        ({"messages": [{"role": "user", "content": 5}]}, "'messages[0].content' must be a string"),
        ({"messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}, "'messages[0].images'"),
    ],
)
def test_bad_fields_get_400_in_ollamas_shape(client, body, words):
    r = load(client, **body)
    assert r.status_code == 400 and words in error_of(r)


@pytest.mark.parametrize(
    "body, words",
    [
        ({"prompt": "x"}, "'model' is required"),
        ({"model": NAME, "prompt": "x", "raw": True, "system": "Be brief."}, "raw mode does not support"),
        ({"model": NAME, "prompt": "x", "images": ["aGk="]}, "'images' is not supported"),
        ({"model": NAME, "prompt": "x", "suffix": "end"}, "'suffix' is not supported"),
        ({"model": NAME, "prompt": "x", "context": [1, 2]}, "'context' is not supported"),
    ],
)
def test_bad_generate_fields(client, body, words):
    r = client.post("/api/generate", json=body)
    assert r.status_code == 400 and words in error_of(r)


def test_bad_json_unknown_routes_and_methods_answer_in_ollamas_shape(client):
    r = client.post("/api/chat", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "valid JSON" in error_of(r)
    assert client.get("/api/chat").status_code == 405 and error_of(client.get("/api/chat"))
    assert client.get("/api/nowhere").status_code == 404 and error_of(client.get("/api/nowhere"))
    assert client.post("/api/pull", json={"model": NAME}).status_code == 400 and "hf.co" in error_of(
        client.post("/api/pull", json={"model": NAME})
    )
    # Our own route under /api/ keeps our shape.
    assert client.post("/api/respond", json={}).get_json()["error"]["field"] == "query"


def test_a_prompt_too_long_for_the_context(client):
    r = client.post("/api/generate", json={"model": NAME, "prompt": "word " * 600, "stream": False})
    assert r.status_code == 400 and "exceeds the context of 512 tokens" in error_of(r)


def test_an_error_mid_stream_is_an_error_line(gemma_engine):
    # REQUEST_TIMEOUT of 1 s and a greedy count that runs for 256 tokens: the answer is cut off
    # after the stream has begun (status 200), so the error comes as its last line.
    client = make_client(gemma_engine, request_timeout=1)
    body = {"model": NAME, "prompt": COUNT, "raw": True, "options": {"temperature": 0, "num_predict": 256}}
    r = client.post("/api/generate", json=body)
    lines = [json.loads(line) for line in r.get_data(as_text=True).splitlines()]
    assert r.status_code == 200 and r.mimetype == "application/x-ndjson"
    assert lines[-1] == {"error": "the answer did not complete within the request timeout"}
    assert len(lines) > 1 and not any(line.get("done") for line in lines[:-1])


def test_the_api_key_guards_ollamas_routes_but_not_its_version(gemma_engine):
    keyed = make_client(gemma_engine, api_key="k" * 20)
    r = keyed.post("/api/chat", json={"model": NAME, "messages": []})
    assert r.status_code == 401 and "API key" in error_of(r)
    assert keyed.get("/api/tags").status_code == 401
    assert keyed.get("/api/version").status_code == 200
    headers = {"Authorization": "Bearer " + "k" * 20}
    assert keyed.post("/api/chat", json={"model": NAME, "messages": []}, headers=headers).status_code == 200


def test_head_on_the_root_answers_200_and_get_is_the_page(client):
    assert client.head("/").status_code == 200
    assert b"<html" in client.get("/").data.lower()


def test_requests_are_counted_under_ollamas_names(client):
    before = metric(
        client.get("/metrics").get_data(as_text=True),
        "llama_server_requests_total",
        'endpoint="ollama.chat",status="200"',
    )
    load(client)
    after = metric(
        client.get("/metrics").get_data(as_text=True),
        "llama_server_requests_total",
        'endpoint="ollama.chat",status="200"',
    )
    assert after == before + 1
