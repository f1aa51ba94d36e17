"""Reranking over HTTP: POST /v1/rerank and /rerank (and llama-server's /reranking spellings).

The Jina/Cohere shape as llama-server serves it: `query`, `documents` (strings, or
`{"text": ...}`), `top_n`, `return_documents` -> `results` sorted by `relevance_score`,
highest first, each with the document's `index` (and `document: {"text"}` when asked),
plus `usage`. A body naming its documents `texts` gets TEI's shape instead, as from
llama-server: a bare list of `{"index", "score"}` (`text` with `return_text`).
The score is the model's classification head, raw (a logit), as llama.cpp computes it.
"""

from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, jsonify, request

from server.errors import InvalidRequest
from server.http.body import json_body
from server.http.retrieval.embeddings import lease_for
from server.http.retrieval.schema import rank_call
from server.http.state import app_state
from server.http.streaming import client_gone_check

blueprint = Blueprint("rerank", __name__)


@blueprint.route("/v1/rerank", methods=["POST"])
@blueprint.route("/rerank", methods=["POST"])
@blueprint.route("/v1/reranking", methods=["POST"])
@blueprint.route("/reranking", methods=["POST"])
def rerank():
    settings = app_state().settings
    call = rank_call(json_body(), settings.embed_max_inputs)
    with lease_for(call.model) as lease:  # held until the scores are back
        try:
            job = lease.engine.rerank(replace(call.request, timeout=settings.request_timeout))
        except InvalidRequest as exc:
            raise exc.renamed({"documents": "texts"} if call.tei else {}) from None
        answer = job.wait(client_gone_check(request.environ))
        name = lease.model.name
    documents = call.request.documents
    scores = [float(v[0]) for v in answer.vectors]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    if call.tei:
        results = [
            {"index": i, "score": scores[i], **({"text": documents[i]} if call.return_documents else {})} for i in order
        ]
        return jsonify(results)
    if call.top_n is not None:
        order = order[: call.top_n]
    results = [
        {
            "index": i,
            "relevance_score": scores[i],
            **({"document": {"text": documents[i]}} if call.return_documents else {}),
        }
        for i in order
    ]
    usage = {"prompt_tokens": answer.prompt_tokens, "total_tokens": answer.prompt_tokens}
    return jsonify({"model": call.model or name, "object": "list", "usage": usage, "results": results})
