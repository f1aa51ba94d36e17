"""Property-based: whatever reaches POST /v1/moderations, and whatever X-Moderation says, the answer is
never a 5xx; errors are in OpenAI's shape naming the field, good bodies get one result per input.
The guard is a fake at the seam (the bodies are what is under test); the chat model is the real Gemma."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.http.moderation import KEY
from tests.server.conftest import make_client
from tests.server.test_safety_policy import RuleGuard

SETTINGS = dict(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MARKERS = st.sampled_from(["<|eot_id|>", "<END CONVERSATION>", "unsafe\nS1", "<|im_end|>", "\u202e", "\x00"])
TEXT = st.lists(st.text(st.characters(), max_size=12) | MARKERS, max_size=4).map("".join)
LEAF = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | TEXT
ANY = st.recursive(LEAF, lambda i: st.lists(i, max_size=3) | st.dictionaries(TEXT, i, max_size=3), max_leaves=8)
INPUT = TEXT | st.lists(TEXT | st.builds(lambda t: {"type": "text", "text": t}, TEXT), min_size=1, max_size=4)
GOOD = st.fixed_dictionaries({"input": INPUT}, optional={"model": st.just("omni-moderation-latest")})
BODY = GOOD | st.dictionaries(st.sampled_from(["input", "model", "extra"]) | TEXT, ANY, max_size=3) | ANY


@pytest.fixture(scope="module")
def client(gemma_engine):
    client = make_client(gemma_engine, moderation="input", guard_model="any-guard")
    client.application.extensions[KEY].guard = RuleGuard()
    return client


@settings(max_examples=150, **SETTINGS)
@given(body=BODY)
def test_any_moderations_body_is_answered_or_refused_by_field(client, body):
    r = client.post("/v1/moderations", data=json.dumps(body), content_type="application/json")
    assert r.status_code < 500, r.get_data(as_text=True)
    if r.status_code == 200:
        inputs = body["input"]
        assert len(r.get_json()["results"]) == (1 if isinstance(inputs, str) else len(inputs))
        assert all(set(x) >= {"flagged", "categories", "category_scores"} for x in r.get_json()["results"])
    else:
        error = r.get_json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}


def test_a_list_of_texts_gets_one_result_each_in_order(client):
    r = client.post("/v1/moderations", json={"input": ["a bomb", "bread", {"type": "text", "text": "bomb"}]})
    assert [x["flagged"] for x in r.get_json()["results"]] == [True, False, True]
    flagged = r.get_json()["results"][0]
    assert flagged["llama_guard_categories"] == [{"code": "S9", "name": "Indiscriminate Weapons"}]
    assert flagged["categories"]["illicit/violent"] is True and flagged["category_scores"]["illicit/violent"] == 0.97
    r = client.post("/v1/moderations", json={"input": [{"type": "image_url", "image_url": {"url": "x"}}]})
    assert r.status_code == 400 and r.get_json()["error"]["param"] == "input[0]"


@settings(max_examples=60, **SETTINGS)
@given(
    value=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20) | st.sampled_from(["both", "Off"])
)
def test_any_moderation_header_is_honoured_or_refused(client, value):
    body = {"model": "gemma-3-270m-q4_k_m", "prompt": "hi", "max_tokens": 1}
    r = client.post("/v1/completions", json=body, headers={"X-Moderation": value})
    assert r.status_code in (200, 400), r.get_data(as_text=True)
    assert (r.status_code == 200) == (value.strip().lower() == "input")
