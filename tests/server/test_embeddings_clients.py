"""Embeddings through the official `openai` and `ollama` clients, against real gunicorn.

One server serves MiniLM (an embedding model), as `make serve` would with LLAMA_SERVER_MODEL
set to it. The OpenAI client asks for base64 by default and decodes it; the Ollama client's
embed and legacy embeddings calls; each client's error type carries our status.
"""

from __future__ import annotations

import numpy as np
import ollama
import openai
import pytest

from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(minilm_gguf, tmp_path_factory):
    with run_gunicorn(minilm_gguf, tmp_path_factory.mktemp("embed-gunicorn")) as (_, url):
        yield url, minilm_gguf.name.removesuffix(".gguf")


@pytest.fixture(scope="module")
def oai(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def olla(served) -> ollama.Client:
    return ollama.Client(host=served[0], timeout=60)


MINILM = "all-minilm-l6-v2.f16"  # the served file's stem: its name in the library
TEXTS = ["The quick brown fox", "jumps over the lazy dog", "東京", "🦙"]


def test_openai_client_embeddings(oai):
    got = oai.embeddings.create(model=MINILM, input=TEXTS)  # base64 on the wire, decoded by the client
    floats = oai.embeddings.create(model=MINILM, input=TEXTS, encoding_format="float")
    assert [d.index for d in got.data] == [0, 1, 2, 3] and got.usage.prompt_tokens == floats.usage.prompt_tokens > 8
    for a, b in zip(got.data, floats.data):
        assert len(a.embedding) == 384 and np.allclose(a.embedding, b.embedding, atol=1e-7)
        assert abs(np.linalg.norm(a.embedding) - 1) < 1e-6
    short = oai.embeddings.create(model=MINILM, input="fox", dimensions=32).data[0].embedding
    assert len(short) == 32 and abs(np.linalg.norm(short) - 1) < 1e-6
    tokens = oai.embeddings.create(model=MINILM, input=[[101, 4419, 102]], encoding_format="float")
    assert tokens.usage.prompt_tokens == 3 and len(tokens.data[0].embedding) == 384


def test_openai_client_errors(oai):
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=MINILM, input="fox", dimensions=1000)
    assert info.value.body["param"] == "dimensions"
    with pytest.raises(openai.BadRequestError) as info:
        oai.embeddings.create(model=MINILM, input=[[1, 99_999_999]])
    assert info.value.body["param"] == "input[0][1]"


def test_ollama_client_embed(olla, served, oai):
    name = served[1]
    got = olla.embed(model=name, input=TEXTS)
    assert len(got.embeddings) == 4 and got.prompt_eval_count > 8 and got.total_duration > 0
    same = oai.embeddings.create(model=name, input=TEXTS, encoding_format="float")
    for a, b in zip(got.embeddings, same.data):
        assert np.allclose(a, b.embedding, atol=1e-7)
    legacy = olla.embeddings(model=name, prompt=TEXTS[0]).embedding
    assert np.allclose(np.asarray(legacy) / np.linalg.norm(legacy), got.embeddings[0], atol=1e-6)
    short = olla.embed(model=f"{name}:latest", input="fox", dimensions=16, truncate=True, keep_alive="5m")
    assert len(short.embeddings[0]) == 16


def test_ollama_client_errors(olla, served):
    with pytest.raises(ollama.ResponseError) as info:
        olla.embed(model="not-served", input="x")
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as info:
        olla.embed(model=served[1], input="word " * 600, truncate=False)
    assert info.value.status_code == 400 and "602 tokens" in info.value.error
