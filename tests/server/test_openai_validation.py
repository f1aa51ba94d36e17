"""OpenAI bodies against the validation table, and the /v1 error shape, without running the model.

The table tests are pure; the HTTP ones use an engine that was never started,
which is a real engine in its real "loading" state.
"""

from __future__ import annotations

import pytest

from server.engine.engine import Engine
from server.errors import InvalidRequest
from server.http.app import create_app
from server.http.openai.schema import validate_openai
from server.model.files import ModelChoice
from server.model.prompt import Message
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS

USER = [{"role": "user", "content": "hi"}]


def chat(**body):
    return validate_openai("chat", {"messages": USER, **body}, 8, 256)


def test_defaults_and_aliases():
    req = chat(
        stop="END",
        max_completion_tokens=20,
        stream_options={"include_usage": True},
        n=1,
        user="u1",
        presence_penalty=0,
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            {"role": "assistant", "content": "ok", "tool_calls": None},
        ],
    )
    r = req.request
    assert r.sampling.stop == ("END",) and r.sampling.max_tokens == 20 and req.include_usage and not r.stream
    assert r.messages == (Message("system", "be brief"), Message("assistant", "ok"))
    plain = validate_openai("completion", {"prompt": "Once"}, 8, 256)
    p = plain.request
    assert (p.prompt, p.sampling.max_tokens, p.messages, plain.include_usage) == ("Once", 8, (), False)


@pytest.mark.parametrize(
    "kind, body, param, words",
    [
        ("chat", {}, "messages", "required"),
        ("chat", {"messages": []}, "messages", "at least"),
        ("chat", {"messages": USER, "prompt": "x"}, "prompt", "unknown"),
        ("completion", {"prompt": "x", "messages": USER}, "messages", "unknown"),
        ("completion", {"prompt": "  "}, "prompt", "blank"),
        ("chat", {"messages": USER, "n": 3}, "n", "n=1"),
        ("chat", {"messages": USER, "frequency_penalty": 3}, "frequency_penalty", "at most 2"),
        ("chat", {"messages": USER, "temperature": 3}, "temperature", "at most 2"),
        ("chat", {"messages": USER, "top_p": "high"}, "top_p", "number"),
        ("chat", {"messages": USER, "max_tokens": 257}, "max_tokens", "at most 256"),
        ("chat", {"messages": USER, "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most length 4"),
        ("chat", {"messages": USER, "stop": [""]}, "stop[0]", "at least length 1"),
        ("chat", {"messages": USER, "seed": True}, "seed", "must be an integer"),
        ("chat", {"messages": [{"role": "tool", "content": "1"}]}, "messages[0].tool_call_id", "required"),
        ("chat", {"messages": [{"role": "function", "content": "1"}]}, "messages[0].role", "one of"),
        ("chat", {"messages": [{"content": "1"}]}, "messages[0]", "role"),
        ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content", "text"),
        ("chat", {"messages": [{"role": "user", "content": "x" * 32_001}]}, "messages[0].content", "at most"),
    ],
)
def test_bad_bodies_name_the_field(kind, body, param, words):
    with pytest.raises(InvalidRequest) as caught:
        validate_openai(kind, body, 8, 256)
    assert caught.value.details.get("field") == param and words in caught.value.message


@pytest.fixture(scope="module")
def loading_client(gemma_gguf):
    """An app over an engine that was never started: it stays in its loading state."""
    settings = Settings(**{**TEST_SETTINGS, "api_key": "k"})
    return create_app(settings, Engine(settings, ModelChoice(gemma_gguf, is_default=True))).test_client()


@pytest.mark.parametrize(
    "method, path, headers, status, error_type, code",
    [
        (
            "post",
            "/v1/chat/completions",
            {"Authorization": "Bearer k"},
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        ("get", "/v1/models", {}, 401, "authentication_error", "invalid_api_key"),
        (
            "post",
            "/v1/chat/completions",
            {"Authorization": "Bearer k", "Content-Type": "text/plain"},
            415,
            "invalid_request_error",
            "unsupported_media_type",
        ),
        (
            "get",
            "/v1/models",
            {"Authorization": "Bearer k", "Host": "evil.example"},
            403,
            "permission_error",
            "forbidden",
        ),
        ("get", "/v1/nowhere", {"Authorization": "Bearer k"}, 404, "not_found_error", "not_found"),
        ("get", "/v1/completions", {"Authorization": "Bearer k"}, 405, "invalid_request_error", "method_not_allowed"),
    ],
)
def test_errors_take_openai_shape(loading_client, method, path, headers, status, error_type, code):
    headers = {"Content-Type": "application/json", **headers}
    response = getattr(loading_client, method)(path, headers=headers, data="not json")
    assert response.status_code == status
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["type"], error["code"]) == (error_type, code)
    if status == 503:
        assert response.headers["Retry-After"] == "5"


def test_the_chat_page_is_served_with_its_assets(loading_client):
    page = loading_client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in html and loading_client.get(asset).status_code == 200


def test_a_model_still_loading_is_a_503_in_openais_shape_and_listed_as_loading(gemma_gguf):
    settings = Settings(**{**TEST_SETTINGS})
    client = create_app(settings, Engine(settings, ModelChoice(gemma_gguf, is_default=True))).test_client()
    body = {"model": gemma_gguf.stem, "messages": [{"role": "user", "content": "hi"}]}
    r = client.post("/v1/chat/completions", json=body)
    error = r.get_json()["error"]
    assert r.status_code == 503 and (error["type"], error["code"]) == ("unavailable_error", "loading")
    listed = {m["id"]: m["status"]["value"] for m in client.get("/v1/models").get_json()["data"]}
    assert listed[gemma_gguf.stem] == "loading"
