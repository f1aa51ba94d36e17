"""Property-based: whatever body reaches an embedding or rerank route, the answer is a 200 or a 4xx naming the field.

Hypothesis builds each route's bodies from its own fields (any text, control-token text,
token ids in and out of the vocabulary, long lists, nested lists), then swaps one value
anywhere for any JSON value, makes every field wild, or sends no object at all (the
strategies of tests/server/test_fuzz_bodies.py). Through the Flask test client over MiniLM:
every answer is below 500; a 200 is a complete answer in the route's shape; a 400 for an
object body names the field that was wrong, in the dialect's error shape.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server.conftest import make_client
from tests.server.test_fuzz_bodies import ANY, SETTINGS, TEXT, bodies

pytestmark = pytest.mark.slow

IDS = st.integers(-5, 40_000) | st.sampled_from([0, 30_521, 30_522])  # MiniLM's vocabulary is 30522 tokens
TOKENS = st.lists(IDS, min_size=1, max_size=700)
# Lists whose items are mostly right, some anything (a number, an object, a list in a list ...).
INPUT = TEXT | st.lists(TEXT | TOKENS | TEXT | ANY, min_size=1, max_size=6) | TOKENS
COMMON = {"truncate": st.booleans(), "model": st.just("m")}
ROUTES = {
    "/v1/embeddings": (
        {"input": INPUT},
        {**COMMON, "encoding_format": st.sampled_from(["float", "base64"]), "dimensions": st.integers(1, 400)},
    ),
    "/api/embed": (
        {"model": st.none(), "input": TEXT | st.lists(TEXT | TEXT | ANY, max_size=4)},
        {"dimensions": st.integers(1, 400), "truncate": st.booleans(), "keep_alive": st.just("5m")},
    ),
    "/api/embeddings": ({"model": st.none(), "prompt": TEXT}, {"options": st.just({})}),
    "/embedding": ({"content": INPUT}, {"embd_normalize": st.integers(-1, 3), **COMMON}),
}
RERANK = (
    {"query": TEXT, "documents": st.lists(TEXT | st.fixed_dictionaries({"text": TEXT}) | ANY, min_size=1, max_size=4)},
    {"top_n": st.integers(1, 5), "return_documents": st.booleans(), "truncate": st.booleans()},
)


SHAPES = {"data", "embeddings", "embedding", "results"}  # what each route's answer holds


def error_field(path: str, body) -> str | None:
    """The field an error answer names, in the dialect's shape (Ollama's names it in its message)."""
    if path.startswith("/v1/"):  # OpenAI's shape; a field named "" (unknown) is named in the message only
        return body["error"]["param"] or (body["error"]["message"] if "''" in body["error"]["message"] else None)
    if path.startswith("/api/"):
        assert set(body) == {"error"} and isinstance(body["error"], str)
        return body["error"] if "'" in body["error"] else None
    return body["error"].get("field") or (body["error"]["message"] if "'" in body["error"]["message"] else None)


def check_answer(client, path: str, body) -> None:
    r = client.post(path, data=json.dumps(body), content_type="application/json")
    assert r.status_code in (200, 400, 404, 413), (r.status_code, body, r.data[:300])
    answer = r.get_json()
    if r.status_code == 200:
        assert answer is not None and (isinstance(answer, list) or set(answer) & SHAPES), answer
        return
    if r.status_code == 400 and isinstance(body, dict) and "the body" not in json.dumps(answer):
        assert error_field(path, answer), (body, answer)  # not a body that is no JSON (NaN) or too deep


@pytest.fixture(scope="module")
def client(minilm_engine):
    return make_client(minilm_engine)


@pytest.fixture(scope="module")
def name(minilm_engine) -> str:
    return minilm_engine.model.path.name.removesuffix(".gguf")


@pytest.mark.parametrize("path", list(ROUTES))
def test_embedding_bodies_never_fail_the_server(client, name, path):
    required, optional = ROUTES[path]
    if path.startswith("/api/"):
        required = {**required, "model": st.sampled_from([name, name, "other"])}

    @settings(**SETTINGS, max_examples=60)
    @given(bodies(required, optional))
    def run(body):
        check_answer(client, path, body)

    run()


@pytest.fixture(scope="module")
def ranker(reranker_engine):
    """A reranker: MiniLM with a random classification head (tests/server/embed_models.py)."""
    return make_client(reranker_engine)


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
def test_rerank_bodies_never_fail_the_server(ranker, path):
    @settings(**SETTINGS, max_examples=60)
    @given(bodies(*RERANK) | ANY)
    def run(body):
        check_answer(ranker, path, body)

    run()


def test_every_sequence_handed_to_llama_cpp_fits_its_batch(minilm_engine):
    """The engine's own guard, below the dialects: any inputs, any lengths, any ids either become
    sequences of 1 to `limit` tokens, every id in the vocabulary, or an InvalidRequest naming one."""
    from server.engine.embedding.inputs import embed_sequences, rank_sequences
    from server.engine.embedding.jobs import EmbedRequest, RankRequest
    from server.errors import InvalidRequest

    facts = minilm_engine._embedder.facts
    long_text = st.integers(0, 3).map(lambda n: "llama " * (n * 300))
    ids = st.lists(st.integers(-3, facts.n_vocab + 3), max_size=1500).map(tuple)
    inputs = st.lists(TEXT | long_text | ids, max_size=5).map(tuple)

    def fits(sequences: list[list[int]]) -> None:
        for s in sequences:
            assert 1 <= len(s) <= facts.limit and all(0 <= t < facts.n_vocab for t in s)

    @settings(**SETTINGS, max_examples=200)
    @given(inputs, st.booleans(), TEXT | long_text, st.lists(TEXT | long_text, max_size=3).map(tuple))
    def run(items, truncate, query, documents):
        try:
            fits(embed_sequences(EmbedRequest(items, truncate), facts, 4))
        except InvalidRequest as exc:
            assert exc.field and exc.field.startswith("input") and f"'{exc.field}'" in exc.message
        try:
            fits(rank_sequences(RankRequest(query, documents, truncate), facts, 4))
        except InvalidRequest as exc:
            assert exc.field and exc.field.split("[")[0] in ("query", "documents")

    run()
