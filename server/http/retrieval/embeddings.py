"""Embeddings over HTTP: OpenAI's POST /v1/embeddings, Ollama's POST /api/embed and legacy
/api/embeddings, llama-server's POST /embedding (and /embeddings).

Each route only translates: its body (server/http/retrieval/schema.py) -> one engine
EmbedRequest -> the engine's raw vectors in its own shape. Vectors are L2-normalized
wherever the anchor normalizes (OpenAI, Ollama's /api/embed, llama-server's default
`embd_normalize: 2`) and left raw where it does not (Ollama's legacy /api/embeddings);
`dimensions` keeps the first values and normalizes again, as OpenAI and Ollama do.
Errors take each dialect's shape through the after-request hooks of server/http/openai/routes.py
(/v1/) and server/http/ollama/routes.py (/api/). Which engine serves a request is decided in
one place, `lease_for`, over the model library.
"""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import numpy as np
from flask import Blueprint, jsonify, request

from server.engine.embedding.jobs import Embeddings, EmbedRequest, shortened
from server.engine.engine import Engine
from server.errors import InvalidRequest
from server.http.body import json_body
from server.http.retrieval.schema import EmbedCall, embed_call
from server.http.state import app_state, keep_alive_of, model_of, use
from server.http.streaming import client_gone_check
from server.library.entries import Lease
from server.library.library import DEFAULT

blueprint = Blueprint("embed", __name__)


def lease_for(model: str | None, ollama: bool = False, keep_alive: object = DEFAULT) -> Lease:
    """A hold on the library's model that serves `model` (the request's `model` field; the default
    model when none), loading it if need be: the one place a request's model is resolved.
    Ollama's routes insist on a name."""
    if ollama and not model:
        raise InvalidRequest("'model' is required", "model")
    return use(model_of({"model": model}), keep_alive)


def _embed(dialect: str, ollama: bool = False) -> tuple[EmbedCall, str, Embeddings | None]:
    """Check the body, find the model, embed; (the call, the model's name, the answer: None when
    there was no input). The model is held until its vectors are back."""
    settings, body = app_state().settings, json_body()
    call = embed_call(dialect, body, settings.embed_max_inputs)
    with lease_for(call.model, ollama, keep_alive_of(body)) as lease:
        return call, lease.model.name, _vectors_of(call, lease.engine, dialect)


def _vectors_of(call: EmbedCall, engine: Engine, dialect: str) -> Embeddings | None:
    if call.request is None:
        return None
    facts = engine.info.get("embedding")
    if facts is not None:
        if call.dimensions is not None and call.dimensions > facts["n_embd"]:
            raise InvalidRequest(
                f"'dimensions' must be at most {facts['n_embd']}, the size of the model's vectors", "dimensions"
            )
        if facts["pooling"] == "none" and dialect != "llama":
            raise InvalidRequest(
                "the model's pooling is 'none' (a vector per token), which this API cannot answer: "
                "use /embedding, or set POOLING",
                "model",
            )
    try:
        job = engine.embed(_with_timeout(call))
    except InvalidRequest as exc:
        raise exc.renamed({"input": call.input_name}) from None
    return job.wait(client_gone_check(request.environ))


def _with_timeout(call: EmbedCall) -> EmbedRequest:
    """This app's REQUEST_TIMEOUT (an engine may be shared by apps, as in tests)."""
    assert call.request is not None
    return replace(call.request, timeout=app_state().settings.request_timeout)


def _vectors(call: EmbedCall, answer: Embeddings) -> list[np.ndarray]:
    return [shortened(v, call.dimensions, call.normalize) for v in answer.vectors]


def _float_list(vector: np.ndarray) -> list[float]:
    values: list[float] = vector.tolist()  # Python floats: what json writes
    return values


@blueprint.route("/v1/embeddings", methods=["POST"])
def v1_embeddings():
    call, name, answer = _embed("openai")
    assert answer is not None  # OpenAI's input is required
    data = []
    for i, vector in enumerate(_vectors(call, answer)):
        if call.encoding == "base64":
            value: str | list[float] = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = _float_list(vector)
        data.append({"object": "embedding", "index": i, "embedding": value})
    usage = {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens}
    return jsonify({"object": "list", "data": data, "model": call.model or name, "usage": usage})


@blueprint.route("/api/embed", methods=["POST"])
def ollama_embed():
    started = time.monotonic_ns()
    call, _, answer = _embed("ollama", ollama=True)
    if answer is None:  # no input: Ollama loads the model and answers with no embeddings
        return jsonify({"model": call.model, "embeddings": []})
    return jsonify(
        {
            "model": call.model,
            "embeddings": [_float_list(v) for v in _vectors(call, answer)],
            "total_duration": time.monotonic_ns() - started,
            "load_duration": 0,  # loaded before any request
            "prompt_eval_count": answer.prompt_tokens,
        }
    )


@blueprint.route("/api/embeddings", methods=["POST"])
def ollama_embeddings():
    call, _, answer = _embed("ollama_legacy", ollama=True)
    return jsonify({"embedding": [] if answer is None else _float_list(answer.vectors[0])})


@blueprint.route("/embedding", methods=["POST"])
@blueprint.route("/embeddings", methods=["POST"])
def embedding():
    call, _, answer = _embed("llama")
    assert answer is not None
    results = []
    for i, vector in enumerate(answer.vectors):
        if vector.ndim == 2:  # pooling "none": each token's vector, as llama.cpp gives them
            rows = [_float_list(row) for row in vector]
        else:
            rows = [_float_list(shortened(vector, call.dimensions, call.normalize))]
        results.append({"index": i, "embedding": rows})
    return jsonify(results)
