"""Ollama's API beside ours: /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version,
/api/delete and /api/copy (/api/pull is in server/http/pull.py).

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
from server.http.body import json_body
from server.http.fields import Limit, check_body
from server.http.ollama import models
from server.http.ollama.schema import NAMES, validate_ollama
from server.http.ollama.tools import ToolReply
from server.http.state import app_state, keep_alive_of, model_of, submit, use
from server.http.streaming import EventStream, client_gone_check, collect
from server.library import store
from server.library.catalog import Model
from server.library.names import check_name

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
    return jsonify({"models": models.tags()})


@blueprint.route("/api/ps", methods=["GET"])
def ps():
    return jsonify({"models": models.running()})


@blueprint.route("/api/show", methods=["POST"])
def show():
    return jsonify(models.show(_named(json_body())))


@blueprint.route("/api/delete", methods=["DELETE", "POST"])
def delete():
    """Remove a model: a copy's preset, or the file (unloaded first; a request running on it finishes)."""
    model = _named(json_body())
    library = app_state().library
    if model.source == "setting":
        raise InvalidRequest(f"'{model.name}' is the server's LLAMA_SERVER_MODEL; it cannot be deleted", "model")
    library.unload(model.name)
    if model.source == "preset":
        store.remove_preset(library.catalog, model.name)
    else:
        store.delete_file(model)
        library.catalog.scan()
    return Response(status=200)


@blueprint.route("/api/copy", methods=["POST"])
def copy():
    """A new name for a model's weights, written to the presets file (never a second copy of the file)."""
    body = json_body()
    check_body(body, {"source": Limit(str, 1, 256, required=True), "destination": Limit(str, 1, 256, required=True)})
    source = model_of(body, "source", required=True)
    destination = check_name(body["destination"], "destination")
    if "/" in destination:
        raise InvalidRequest("'destination' must be a plain name, not a pull reference", "destination")
    store.copy(app_state().library.catalog, source, destination)
    return Response(status=200)


def _named(body) -> Model:
    """The model of a management body: `model`, or `name` as older clients send it."""
    if isinstance(body, dict) and body.get("model") is None and body.get("name") is not None:
        body = {**body, "model": body["name"]}
    return model_of(body, required=True)


@blueprint.route("/api/chat", methods=["POST"])
def chat():
    return _answer("chat")


@blueprint.route("/api/generate", methods=["POST"])
def generate():
    return _answer("generate")


def _answer(kind: str):
    started = time.monotonic_ns()
    state, body = app_state(), json_body()
    named = model_of(body, required=True)
    call = validate_ollama(kind, body, state.settings, named.preset.sampling)
    keep_alive = keep_alive_of(body)
    wrap = WRAPS[kind]
    if call.request is None:  # no prompt or messages: Ollama's way to load a model, or to unload it
        return jsonify(
            {**_head(call.model), **wrap(""), "done": True, "done_reason": _load_or_unload(named, keep_alive)}
        )
    loaded, loading = state.library.status(named) == "loaded", time.monotonic_ns()
    generation = submit(call.request, NAMES, named, keep_alive)
    load_ns = 0 if loaded else time.monotonic_ns() - loading  # waiting for the model to load
    reply = ToolReply() if call.request.uses_tools else None
    if call.request.stream:
        lines = Lines(call.model, wrap, started, reply, load_ns)
        return Response(EventStream(generation, lines.render, _error_line), mimetype="application/x-ndjson")
    text, done = collect(generation, client_gone_check(request.environ))
    if reply is None:
        return jsonify(_final(call.model, wrap(text), done, started, load_ns))
    content = reply.content(text)
    rest, calls = reply.finish()
    return jsonify(_final(call.model, _with_calls(content + rest, calls), done, started, load_ns))


def _load_or_unload(model: Model, keep_alive: object) -> str:
    """`keep_alive: 0` unloads the model (once idle); otherwise it is loaded and kept as asked."""
    if keep_alive == 0:
        app_state().library.unload(model.name)
        return "unload"
    use(model, keep_alive).release()
    return "load"


def _with_calls(content: str, calls: list[dict]) -> dict:
    """A chat message with the answer's tool calls, Ollama's shape (only chat has tools)."""
    message: dict = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"message": message}


def _head(model: str) -> dict:
    return {"model": model, "created_at": models.timestamp(time.time())}


def _final(model: str, text: dict, done: Done, started: int, load_ns: int = 0) -> dict:
    """The last object: the counts and durations in nanoseconds (load_duration: waiting for the model to load)."""
    usage, timings = done.usage, done.timings
    return {
        **_head(model),
        **text,
        "done": True,
        "done_reason": done.finish_reason,
        "total_duration": time.monotonic_ns() - started,
        "load_duration": load_ns,
        "prompt_eval_count": usage["prompt_tokens"],
        "prompt_eval_duration": round(timings["prompt_ms"] * 1e6),
        "eval_count": usage["completion_tokens"],
        "eval_duration": round(timings["generation_ms"] * 1e6),
    }


class Lines:
    """The engine's events as Ollama's NDJSON: one object per text delta, then the final one.
    With tools, a call comes whole in one object before the final one, as Ollama sends it."""

    def __init__(self, model: str, wrap: Wrap, started: int, reply: ToolReply | None = None, load_ns: int = 0):
        self.model, self.wrap, self.started, self.reply, self.load_ns = model, wrap, started, reply, load_ns

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
            yield _line(_final(self.model, self.wrap(""), event, self.started, self.load_ns))

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
