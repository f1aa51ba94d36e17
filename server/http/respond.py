"""Our own dialect: POST /api/respond, one JSON answer or server-sent events.

Only translation: the body -> the engine's Request (respond_schema.py), the
engine's events -> `{"response", ...}` or `data: {"type": "delta"|"done"|"error"}`.
`model` (optional: the default model) picks the library's model, `keep_alive` how long
it stays loaded after, as on Ollama's routes.
"""

from __future__ import annotations

from typing import Iterator

from flask import Blueprint, Response, jsonify, request

from server.engine.engine import Generation
from server.engine.request import Delta
from server.errors import ServerError
from server.http.body import json_body
from server.http.respond_schema import NAMES, validate_respond
from server.http.state import app_state, keep_alive_of, model_of, submit
from server.http.streaming import SSE_HEADERS, EventStream, client_gone_check, collect, final, sse

blueprint = Blueprint("respond", __name__)


@blueprint.route("/api/respond", methods=["POST"])
def respond():
    state, body = app_state(), json_body()
    named = model_of(body)
    req = validate_respond(body, state.settings.max_tokens, state.settings.max_tokens_ceiling, named.preset.sampling)
    generation = submit(req, NAMES, named, keep_alive_of(body))
    model = named.name
    extra = {"constrained": True} if req.grammar is not None else {}
    if req.stream:
        return Response(
            EventStream(generation, lambda g: _events(g, model, extra), _error),
            mimetype="text/event-stream",
            headers=SSE_HEADERS,
        )
    text, done = collect(generation, client_gone_check(request.environ))
    return jsonify({"response": text, **final(done, model), **extra})


def _events(generation: Generation, model: str, extra: dict) -> Iterator[str]:
    """One event per text delta, then a final one."""
    for event in generation:
        if isinstance(event, Delta):
            yield sse({"type": "delta", "text": event.text})
        else:
            yield sse({"type": "done", **final(event, model), **extra})


def _error(exc: ServerError) -> str:
    return sse({"type": "error", **exc.body()})
