"""Ollama's API beside ours: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version.

The same engine, queue, API key (server/http/guard.py; /api/version stays open, as the
liveness probe Ollama's clients use) and metrics as /api/respond and /v1; only the wire
format differs. Chat and generate share one code path and differ by how the text is
wrapped (`{"message": {...}}` or `{"response": ...}`). Answers stream as NDJSON, one
object per piece of text and a last one with `done: true` and the counts and
durations (nanoseconds), unless the body says `"stream": false`. Errors keep the one
mapping from domain exceptions to statuses (server/http/errors.py); an after-request
hook rewrites them into Ollama's `{"error": "..."}` on Ollama's paths, and a failure
mid-stream ends the stream with a line in that shape.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Iterator

from flask import Blueprint, Response, jsonify, request

from server.engine.engine import Generation
from server.engine.request import Delta, Done
from server.errors import InvalidRequest, ServerError
from server.http import ollama_models as models
from server.http.body import json_body
from server.http.ollama_schema import NAMES, validate_ollama
from server.http.ollama_tools import ToolReply
from server.http.state import app_state, submit
from server.http.streaming import EventStream, client_gone_check, collect

blueprint = Blueprint("ollama", __name__)

# The Ollama release whose API reference (docs/api.md) these routes follow; clients read it
# to decide which features to use.
OLLAMA_VERSION = "0.32.15"
# Our own routes under /api/, whose errors keep our shape.
OURS = ("/api/respond", "/api/health")

Wrap = Callable[[str], dict]
WRAPS: dict[str, Wrap] = {
    "chat": lambda text: {"message": {"role": "assistant", "content": text}},
    "generate": lambda text: {"response": text},
}


@blueprint.route("/api/version", methods=["GET"])
def version():
    return jsonify({"version": OLLAMA_VERSION})


@blueprint.route("/api/tags", methods=["GET"])
def tags():
    return jsonify({"models": [models.entry(app_state().engine)]})


@blueprint.route("/api/ps", methods=["GET"])
def ps():
    return jsonify({"models": models.running(app_state().engine)})


@blueprint.route("/api/show", methods=["POST"])
def show():
    state = app_state()
    body = json_body()
    name = (body.get("model") or body.get("name")) if isinstance(body, dict) else None  # "name": older clients
    if not isinstance(name, str) or not name:
        raise InvalidRequest("'model' is required", "model")
    models.check_name(state.engine, name)
    return jsonify(models.show(state.engine, state.settings))


@blueprint.route("/api/chat", methods=["POST"])
def chat():
    return _answer("chat")


@blueprint.route("/api/generate", methods=["POST"])
def generate():
    return _answer("generate")


def _answer(kind: str):
    started = time.monotonic_ns()
    state = app_state()
    call = validate_ollama(kind, json_body(), state.settings)
    models.check_name(state.engine, call.model)
    wrap = WRAPS[kind]
    if call.request is None:  # no prompt or messages: Ollama's way to load the model, which is loaded
        state.engine.check_ready()
        return jsonify({**_head(call.model), **wrap(""), "done": True, "done_reason": "load"})
    generation = submit(call.request, NAMES)
    reply = ToolReply() if call.request.uses_tools else None
    if call.request.stream:
        lines = Lines(call.model, wrap, started, reply)
        return Response(EventStream(generation, lines.render, _error_line), mimetype="application/x-ndjson")
    text, done = collect(generation, client_gone_check(request.environ))
    if reply is None:
        return jsonify(_final(call.model, wrap(text), done, started))
    content = reply.content(text)
    rest, calls = reply.finish()
    return jsonify(_final(call.model, _with_calls(content + rest, calls), done, started))


def _with_calls(content: str, calls: list[dict]) -> dict:
    """A chat message with the answer's tool calls, Ollama's shape (only chat has tools)."""
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"message": message}


def _head(model: str) -> dict:
    return {"model": model, "created_at": models.timestamp(time.time())}


def _final(model: str, text: dict, done: Done, started: int) -> dict:
    """The last object: the counts and durations in nanoseconds (the model is loaded before any request)."""
    usage, timings = done.usage, done.timings
    return {
        **_head(model),
        **text,
        "done": True,
        "done_reason": done.finish_reason,
        "total_duration": time.monotonic_ns() - started,
        "load_duration": 0,
        "prompt_eval_count": usage["prompt_tokens"],
        "prompt_eval_duration": round(timings["prompt_ms"] * 1e6),
        "eval_count": usage["completion_tokens"],
        "eval_duration": round(timings["generation_ms"] * 1e6),
    }


class Lines:
    """The engine's events as Ollama's NDJSON: one object per text delta, then the final one.
    With tools, a call comes whole in one object before the final one, as Ollama sends it."""

    def __init__(self, model: str, wrap: Wrap, started: int, reply: ToolReply | None = None):
        self.model, self.wrap, self.started, self.reply = model, wrap, started, reply

    def render(self, generation: Generation) -> Iterator[str]:
        for event in generation:
            if isinstance(event, Delta):
                text = self.reply.content(event.text) if self.reply else event.text
                if text:
                    yield self._piece(self.wrap(text))
                continue
            if self.reply:
                content, calls = self.reply.finish()
                if content or calls:
                    yield self._piece(_with_calls(content, calls))
            yield _line(_final(self.model, self.wrap(""), event, self.started))

    def _piece(self, text: dict) -> str:
        return _line({**_head(self.model), **text, "done": False})


def _line(payload: dict) -> str:
    return json.dumps(payload, ensure_ascii=False) + "\n"


def _error_line(exc: ServerError) -> str:
    return _line({"error": exc.message})


@blueprint.after_app_request
def _ollama_errors(response: Response) -> Response:
    """Reshape error answers on Ollama's paths (unknown /api/ ones too) into `{"error": "..."}`."""
    if not request.path.startswith("/api/") or request.path in OURS or response.status_code < 400:
        return response
    body = response.get_json(silent=True) if response.is_json else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        response.set_data(json.dumps({"error": body["error"].get("message", "")}))
    return response
