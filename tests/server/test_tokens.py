"""POST /tokenize and /detokenize in llama-server's shapes, on the shared Gemma engine (in-process).

A round trip gives the text back, pieces put together give its bytes, and with
add_special the count is what a raw prompt of the same text costs in `usage`.
"""

from __future__ import annotations

import pytest

TEXT = "Héllo wörld, a test with unicode 媽 and emoji 🤗"


def tokenize(client, **body) -> list:
    r = client.post("/tokenize", json=body)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["tokens"]


def test_round_trip_gives_the_text_back(client):
    tokens = tokenize(client, content=TEXT)
    assert all(isinstance(t, int) for t in tokens) and len(tokens) > 5
    r = client.post("/detokenize", json={"tokens": tokens})
    assert r.status_code == 200 and r.get_json() == {"content": TEXT}


def test_pieces_are_the_texts_bytes_token_by_token(client):
    pieces = tokenize(client, content=TEXT, with_pieces=True)
    assert [p["id"] for p in pieces] == tokenize(client, content=TEXT)
    # A piece that is not whole UTF-8 comes as its byte values.
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"]) for p in pieces)
    assert joined.decode() == TEXT


def test_special_tokens_are_parsed_and_add_special_adds_bos(client):
    plain = tokenize(client, content="<start_of_turn>user")
    assert len(plain) == 2  # the turn marker is one token, not its characters
    assert tokenize(client, content="hi", add_special=True) == [2, *tokenize(client, content="hi")]  # Gemma's BOS


@pytest.mark.parametrize("prompt", ["Once upon a time", "<start_of_turn>user\nHi<end_of_turn>\n"])
def test_counts_agree_with_usage_for_a_raw_prompt(client, prompt):
    counted = len(tokenize(client, content=prompt, add_special=True))
    r = client.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1, "temperature": 0})
    assert r.status_code == 200 and r.get_json()["usage"]["prompt_tokens"] == counted


@pytest.mark.parametrize(
    "path, body, field",
    [
        ("/tokenize", {}, "content"),
        ("/tokenize", {"content": 5}, "content"),
        ("/tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces"),
        ("/tokenize", {"content": "x", "extra": 1}, "extra"),
        ("/detokenize", {}, "tokens"),
        ("/detokenize", {"tokens": "1 2"}, "tokens"),
        ("/detokenize", {"tokens": [1, "two"]}, "tokens[1]"),
        ("/detokenize", {"tokens": [1, -1]}, "tokens[1]"),
        ("/detokenize", {"tokens": [1, 262144]}, "tokens[1]"),  # Gemma's vocabulary ends at 262143
    ],
)
def test_bad_bodies_get_400_naming_the_field(client, path, body, field):
    r = client.post(path, json=body)
    assert r.status_code == 400 and r.get_json()["error"]["field"] == field
