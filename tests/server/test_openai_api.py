"""The /v1 routes through the official `openai` client, against real gunicorn serving Gemma 3 270M.

The server has an API key set, so every call here also proves the bearer key is
accepted; a wrong key is one of the error cases. Plain and streamed chat
completions must agree token for token (greedy, same seed), completions honour a
stop string, and the /v1 traffic shows in the same /metrics as /api/respond.
"""

from __future__ import annotations

import json

import openai
import pytest
import requests

from tests.server.conftest import metric
from tests.server.gunicorn_util import API_KEY, KEYED

pytestmark = pytest.mark.slow
MODEL = "gemma-3-270m-q4_k_m"  # the served file's stem: its name in the library
CHAT = dict(model=MODEL, messages=[{"role": "user", "content": "Name a color."}], temperature=0, seed=1, max_tokens=6)


@pytest.fixture(scope="module")
def base(keyed_server) -> str:
    return keyed_server[1]


@pytest.fixture(scope="module")
def client(base) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def plain_chat(client):
    return client.chat.completions.create(**CHAT)


def test_models_lists_the_library_with_the_served_model_loaded(client, base):
    listed = {m.id: m for m in client.models.list().data}
    assert listed[MODEL].object == "model" and listed[MODEL].status == {"value": "loaded"}
    assert all(m.object == "model" and m.status["value"] in ("loaded", "unloaded") for m in listed.values())


def test_chat_completion(plain_chat):
    assert plain_chat.object == "chat.completion" and plain_chat.id.startswith("chatcmpl-")
    choice = plain_chat.choices[0]
    assert len(plain_chat.choices) == 1 and choice.index == 0
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = plain_chat.usage
    assert 0 < usage.completion_tokens <= CHAT["max_tokens"] and usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_streamed_chat_matches_the_plain_answer(client, plain_chat):
    chunks = list(client.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
    with_choice = [c.choices[0] for c in chunks if c.choices]
    assert len(with_choice) > 2  # the opening role chunk, at least one text chunk, the closing one
    assert "".join(c.delta.content or "" for c in with_choice) == plain_chat.choices[0].message.content
    assert [c.finish_reason for c in with_choice if c.finish_reason] == [plain_chat.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain_chat.usage


def test_stream_wire_format_ends_with_done(base):
    body = {**CHAT, "stream": True}
    with requests.post(
        f"{base}/v1/chat/completions",
        json=body,
        stream=True,
        timeout=60,
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = r.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: ") for e in events[:-2])
    assert payloads[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "usage" not in payloads[-1]  # only with stream_options.include_usage


def test_completion_streams_and_honours_a_stop_string(client):
    ask = dict(model=MODEL, prompt="The days of the week are Monday,", temperature=0, seed=3, max_tokens=8)
    first = client.completions.create(**ask)
    text = first.choices[0].text
    assert first.object == "text_completion" and first.id.startswith("cmpl-") and text.strip()
    streamed = list(client.completions.create(**ask, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == text
    # Stop on a piece the model is known to write: the answer must end right before its first occurrence.
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    stopped = client.completions.create(**ask, stop=[stop])
    assert stopped.choices[0].text == text[: text.index(stop)]
    assert stopped.choices[0].finish_reason == "stop"


@pytest.mark.parametrize(
    "extra, status, param, code",
    [
        ({"n": 2}, 400, "n", "invalid_request"),
        ({"max_tokens": 100_000}, 400, "max_tokens", "invalid_request"),
        ({"messages": [{"role": "user", "content": "word " * 700}]}, 400, None, "context_length_exceeded"),
        # A tool result must say which call it answers.
        ({"messages": [{"role": "tool", "content": "42"}]}, 400, "messages[0].tool_call_id", "invalid_request"),
        ({"messages": [{"role": "function", "content": "42"}]}, 400, "messages[0].role", "invalid_request"),
        ({"messages": [{"role": "robot", "content": "42"}]}, 400, "messages[0].role", "invalid_request"),
    ],
)
def test_bad_requests_get_openai_errors(client, extra, status, param, code):
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(**{**CHAT, **extra})
    error = caught.value
    assert (error.status_code, error.param, error.code, error.type) == (status, param, code, "invalid_request_error")
    assert error.message


def test_a_wrong_key_is_refused(base):
    stranger = openai.OpenAI(base_url=f"{base}/v1", api_key="not-the-key", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError) as caught:
        stranger.models.list()
    assert caught.value.code == "invalid_api_key" and caught.value.type == "authentication_error"


def test_same_engine_and_metrics_as_api_respond(client, base):
    auth = {"Authorization": f"Bearer {API_KEY}"}
    before = requests.get(f"{base}/metrics", headers=KEYED, timeout=5).text
    client.chat.completions.create(**CHAT)
    answer = requests.post(
        f"{base}/api/respond", json={"query": "Name a color.", "max_tokens": 4}, headers=auth, timeout=60
    )
    assert answer.status_code == 200
    after = requests.get(f"{base}/metrics", headers=KEYED, timeout=5).text
    chat = 'endpoint="v1.chat_completions",status="200"'
    assert metric(after, "llama_server_requests_total", chat) == metric(before, "llama_server_requests_total", chat) + 1
    finished = sum(
        metric(after, "llama_server_generations_total", f'finish_reason="{r}"')
        - metric(before, "llama_server_generations_total", f'finish_reason="{r}"')
        for r in ("stop", "length")
    )
    assert finished == 2  # both went through the one engine the metrics observe
