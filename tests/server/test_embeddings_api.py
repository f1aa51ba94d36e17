"""The embedding and rerank routes' wire shapes, through the Flask test client over real engines.

OpenAI's /v1/embeddings (strings, token lists, base64, dimensions, usage), Ollama's /api/embed
and legacy /api/embeddings, llama-server's /embedding, and /v1/rerank (Jina's shape and TEI's):
what each normalizes, what each refuses and how its errors read.
"""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.server.conftest import make_client, metric


@pytest.fixture(scope="module")
def mini(minilm_engine):
    return make_client(minilm_engine)


@pytest.fixture(scope="module")
def name(minilm_engine) -> str:
    return minilm_engine.model.path.name.removesuffix(".gguf")


MINILM = "all-minilm-l6-v2.f16"  # the converted file's stem: its name in the library


def vec(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def test_openai_shape_normalized_with_usage(mini):
    r = mini.post("/v1/embeddings", json={"input": ["hello world", "good night"], "model": MINILM})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["object"] == "list" and body["model"] == MINILM
    assert [d["index"] for d in body["data"]] == [0, 1] and all(d["object"] == "embedding" for d in body["data"])
    assert all(abs(np.linalg.norm(vec(d["embedding"])) - 1) < 1e-6 for d in body["data"])
    assert len(body["data"][0]["embedding"]) == 384
    # [CLS] hello world [SEP] + [CLS] good night [SEP]
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


def test_openai_token_lists_and_base64_agree_with_text(mini):
    ids = mini.post("/tokenize", json={"content": "hello world", "add_special": True}).json["tokens"]
    as_text = mini.post("/v1/embeddings", json={"input": "hello world"}).json["data"][0]["embedding"]
    as_ids = mini.post("/v1/embeddings", json={"input": ids}).json["data"][0]["embedding"]
    nested = mini.post("/v1/embeddings", json={"input": [ids, "hello world"], "encoding_format": "base64"}).json
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in nested["data"]]
    assert as_text == as_ids
    assert np.array_equal(decoded[0], np.asarray(as_text, dtype=np.float32))
    assert np.array_equal(decoded[0], decoded[1])


def test_dimensions_truncate_then_normalize(mini):
    full = vec(mini.post("/v1/embeddings", json={"input": "a llama"}).json["data"][0]["embedding"])
    short = vec(mini.post("/v1/embeddings", json={"input": "a llama", "dimensions": 64}).json["data"][0]["embedding"])
    assert len(short) == 64 and abs(np.linalg.norm(short) - 1) < 1e-6
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    r = mini.post("/v1/embeddings", json={"input": "a llama", "dimensions": 385})
    assert r.status_code == 400 and r.json["error"]["param"] == "dimensions" and "384" in r.json["error"]["message"]


@pytest.mark.parametrize(
    "body, param",
    [
        ({"input": []}, "input"),
        ({"input": [[]]}, "input[0]"),
        ({"input": ["ok", 3.5]}, "input[1]"),
        ({"input": [[1, "2"]]}, "input[0][1]"),
        ({"input": [[1, True]]}, "input[0][1]"),
        ({"input": [[1, 10**9]]}, "input[0][1]"),
        ({"input": [[1, -1]]}, "input[0][1]"),
        ({"input": "x", "encoding_format": "binary"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "shape": 1}, "shape"),
        ({}, "input"),
    ],
)
def test_openai_refusals_name_the_field(mini, body, param):
    r = mini.post("/v1/embeddings", json=body)
    assert r.status_code == 400 and r.json["error"]["param"] == param, r.json


def test_too_many_inputs_and_too_long_inputs(mini):
    r = mini.post("/v1/embeddings", json={"input": ["x"] * 2049})
    assert r.status_code == 400 and r.json["error"]["param"] == "input" and "2049" in r.json["error"]["message"]
    long = "word " * 600
    assert mini.post("/v1/embeddings", json={"input": long}).json["usage"]["prompt_tokens"] == 512
    r = mini.post("/v1/embeddings", json={"input": [long], "truncate": False})
    assert r.status_code == 400 and r.json["error"]["param"] == "input[0]"
    assert "602 tokens" in r.json["error"]["message"]


def test_ollama_embed(mini, name):
    r = mini.post("/api/embed", json={"model": name, "input": ["why is the sky blue?", "llamas"]})
    assert r.status_code == 200, r.json
    body = r.json
    assert body["model"] == name and len(body["embeddings"]) == 2 and body["prompt_eval_count"] > 4
    assert body["total_duration"] > 0 and body["load_duration"] == 0
    assert all(abs(np.linalg.norm(vec(e)) - 1) < 1e-6 for e in body["embeddings"])
    short = mini.post("/api/embed", json={"model": name, "input": "llamas", "dimensions": 8}).json["embeddings"][0]
    assert len(short) == 8 and abs(np.linalg.norm(vec(short)) - 1) < 1e-6
    assert mini.post("/api/embed", json={"model": name}).json == {"model": name, "embeddings": []}


def test_ollama_embed_refusals(mini, name):
    cases = [
        ({"model": name, "input": [1, 2]}, 400, "'input[0]' must be a string"),
        ({"model": name, "input": "word " * 600, "truncate": False}, 400, "602 tokens, more than the model's context"),
        ({"model": "nope", "input": "x"}, 404, "not found"),
        ({"input": "x"}, 400, "'model' is required"),
        ({"model": name, "input": "x", "options": []}, 400, "'options'"),
    ]
    for body, status, words in cases:
        r = mini.post("/api/embed", json=body)
        assert r.status_code == status and words in r.json["error"], (body, r.json)


def test_ollama_legacy_embeddings_are_raw(mini, name):
    raw = vec(mini.post("/api/embeddings", json={"model": name, "prompt": "llamas"}).json["embedding"])
    unit = vec(mini.post("/api/embed", json={"model": name, "input": "llamas"}).json["embeddings"][0])
    assert abs(np.linalg.norm(raw) - 1) > 1e-3 and np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)
    assert mini.post("/api/embeddings", json={"model": name, "prompt": ""}).json == {"embedding": []}
    r = mini.post("/api/embeddings", json={"model": name, "prompt": "word " * 600, "truncate": False})
    assert r.status_code == 400 and r.json["error"].startswith("'prompt' has 602 tokens")
    r = mini.post("/embedding", json={"content": ["a", [1, 99_999]]})
    assert r.status_code == 400 and r.json["error"]["field"] == "content[1][1]"


def test_llama_server_embedding_shape_and_embd_normalize(mini):
    body = mini.post("/embedding", json={"content": "llamas"}).json
    assert body[0]["index"] == 0 and len(body[0]["embedding"]) == 1
    unit = vec(body[0]["embedding"][0])
    raw = vec(mini.post("/embeddings", json={"input": ["llamas"], "embd_normalize": -1}).json[0]["embedding"][0])
    taxicab = vec(mini.post("/embedding", json={"content": "llamas", "embd_normalize": 1}).json[0]["embedding"][0])
    assert abs(np.linalg.norm(unit) - 1) < 1e-6 and abs(np.abs(taxicab).sum() - 1) < 1e-5
    assert np.allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)
    r = mini.post("/embedding", json={"content": "x", "input": "y"})
    assert r.status_code == 400 and r.json["error"]["field"] == "input"


def test_rerank_refused_by_an_embedding_model(mini):
    r = mini.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert r.status_code == 400 and "pooling 'rank'" in r.json["error"]["message"]


@pytest.fixture(scope="module")
def ranker(reranker_engine):
    """A reranker: MiniLM with a random classification head (tests/server/embed_models.py)."""
    return make_client(reranker_engine)


def test_rerank_jina_shape(ranker):
    docs = ["a panda is a bear", "hi", {"text": "pandas eat bamboo"}, "the stock market"]
    ask = {"query": "What is a panda?", "documents": docs, "top_n": 3, "return_documents": True}
    r = ranker.post("/v1/rerank", json=ask)
    assert r.status_code == 200, r.json
    body = r.json
    results = body["results"]
    assert len(results) == 3 and body["object"] == "list" and body["usage"]["prompt_tokens"] > 10
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True) and len({x["index"] for x in results}) == 3
    texts = [d if isinstance(d, str) else d["text"] for d in docs]
    assert all(x["document"]["text"] == texts[x["index"]] for x in results)
    everything = ranker.post("/rerank", json={"query": "What is a panda?", "documents": texts}).json["results"]
    assert [x["index"] for x in everything][:3] == [x["index"] for x in results] and "document" not in everything[0]


def test_rerank_tei_shape_and_refusals(ranker):
    r = ranker.post("/rerank", json={"query": "q", "texts": ["b", "a"], "return_text": True})
    assert isinstance(r.json, list) and {x["text"] for x in r.json} == {"a", "b"} and "score" in r.json[0]
    for body, field in [
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "q", "documents": ["a", 1]}, "documents[1]"),
        ({"query": "q", "documents": [{"text": 1}]}, "documents[0].text"),
        ({"query": 1, "documents": ["a"]}, "query"),
        ({"documents": ["a"]}, "query"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"query": "q", "documents": ["a"], "texts": ["b"]}, "documents"),
        ({"query": "q", "texts": ["word " * 600], "truncate": False}, "texts[0]"),
    ]:
        r = ranker.post("/v1/rerank", json=body)
        assert r.status_code == 400 and r.json["error"]["param"] == field, (body, r.json)


def test_an_embedding_model_s_health_and_metrics(mini):
    health = mini.get("/api/health").json
    assert health["embedding"] == {"pooling": "mean", "n_embd": 384, "max_tokens": 512}
    before = mini.get("/metrics").get_data(as_text=True)
    mini.post("/v1/embeddings", json={"input": ["one", "two"]})
    after = mini.get("/metrics").get_data(as_text=True)
    count = [metric(text, "llama_server_batch_sequences_count") for text in (before, after)]
    total = [metric(text, "llama_server_batch_sequences_sum") for text in (before, after)]
    assert count[1] == count[0] + 1 and total[1] == total[0] + 2  # one batch of two, counted as a decoder step
    r = mini.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and r.json["error"]["param"] == "model" and "only embeds" in r.json["error"]["message"]


def test_a_chat_model_embeds_over_every_dialect_when_pooling_is_set(smollm_embed_engine):
    client = make_client(smollm_embed_engine, pooling="mean")
    name = smollm_embed_engine.model.path.name.removesuffix(".gguf")
    openai_vec = client.post("/v1/embeddings", json={"input": "llamas"}).json["data"][0]["embedding"]
    ollama_vec = client.post("/api/embed", json={"model": name, "input": "llamas"}).json["embeddings"][0]
    assert len(openai_vec) == 576 and openai_vec == ollama_vec
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    answer = client.post("/v1/chat/completions", json=chat)
    assert answer.status_code == 200  # it still generates
    r = client.post("/v1/embeddings", json={"input": ""})  # SmolLM2 adds no BOS: nothing to embed
    assert r.status_code == 400 and r.json["error"]["param"] == "input" and "empty" in r.json["error"]["message"]


def test_every_embedding_route_needs_the_key_when_one_is_set(minilm_engine, reranker_engine, name):
    key = {"Authorization": "Bearer s3cret"}
    client = make_client(minilm_engine, api_key="s3cret")
    routes = [
        ("/v1/embeddings", {"input": "hi"}),
        ("/api/embed", {"model": name, "input": "hi"}),
        ("/api/embeddings", {"model": name, "prompt": "hi"}),
        ("/embedding", {"content": "hi"}),
        ("/embeddings", {"content": "hi"}),
    ]
    for path, body in routes:
        assert client.post(path, json=body).status_code == 401, path
        assert client.post(path, json=body, headers=key).status_code == 200, path
    ranker = make_client(reranker_engine, api_key="s3cret")
    for path in ("/v1/rerank", "/rerank", "/v1/reranking", "/reranking"):
        body = {"query": "q", "documents": ["a"]}
        assert ranker.post(path, json=body).status_code == 401, path
        assert ranker.post(path, json=body, headers=key).status_code == 200, path


def test_pooling_none_gives_a_raw_vector_per_token_on_llama_server_s_route_only(minilm_gguf, mini):
    from server.engine.engine import Engine
    from server.model.files import ModelChoice
    from server.settings import Settings
    from tests.server.conftest import EMBED_SETTINGS

    engine = Engine(Settings(**EMBED_SETTINGS, pooling="none"), ModelChoice(minilm_gguf, is_default=False)).start()
    try:
        assert engine.wait_ready(120)
        client = make_client(engine, pooling="none")
        rows = client.post("/embedding", json={"content": "hello world"}).json[0]["embedding"]
        assert len(rows) == 4 and all(len(r) == 384 for r in rows)  # [CLS] hello world [SEP]
        mean = vec(rows).mean(axis=0)
        pooled = vec(
            mini.post("/embedding", json={"content": "hello world", "embd_normalize": -1}).json[0]["embedding"][0]
        )
        assert np.allclose(mean, pooled, atol=1e-5)  # mean pooling is the mean of these
        r = client.post("/v1/embeddings", json={"input": "hello world"})
        assert r.status_code == 400 and r.json["error"]["param"] == "model" and "'none'" in r.json["error"]["message"]
    finally:
        engine.close()
