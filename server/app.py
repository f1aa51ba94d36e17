"""The Flask app: HTTP in front of the engine.

Handlers only authenticate, validate, submit to the engine and relay its events,
as one JSON answer or as server-sent events. Per-app state (settings, engine,
metrics) lives in app.extensions. The model loads in the engine's own thread,
so the app answers /api/health with 503 until it is ready.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, current_app, jsonify, request

from server.engine import Delta, Engine, Generation
from server.errors import InvalidRequest, ServerError, register_error_handlers
from server.metrics import Metrics
from server.openai_api import blueprint
from server.settings import Settings
from server.validation import validate_respond
from server.web import EXTENSION, AppState, app_state, authorize, client_gone_check, collect, final

log = logging.getLogger(__name__)
ENDPOINTS = {"respond", "health", "metrics", "index", "v1.chat_completions", "v1.completions", "v1.models"}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """The WSGI app. Without `engine`, one is created and starts loading the model at once."""
    settings = settings or Settings.from_env()
    _configure_logging()
    if engine is None:
        engine = Engine(settings).start()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    app.extensions[EXTENSION] = AppState(settings, engine, Metrics(engine))
    register_error_handlers(app)
    app.add_url_rule("/api/respond", "respond", respond, methods=["POST"])
    app.add_url_rule("/api/health", "health", health, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    app.add_url_rule("/", "index", index, methods=["GET"])
    app.register_blueprint(blueprint)
    app.after_request(_count_request)
    return app


def respond():
    state = app_state()
    authorize(state.settings.api_key)
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidRequest("the body must be valid JSON")
    req = validate_respond(body, state.settings.max_tokens, state.settings.max_tokens_ceiling)
    generation = state.engine.submit(req, on_done=state.metrics.observe, timeout=state.settings.request_timeout)
    model = state.engine.info["model"]
    if req.stream:
        return Response(EventStream(generation, model), mimetype="text/event-stream",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return jsonify(collect(generation, model, client_gone_check(request.environ)))


def index():
    """The chat page (server/static/); its script talks to /v1/chat/completions."""
    response = current_app.send_static_file("index.html")
    # Only our own files run on the page: no inline script, nothing from elsewhere.
    response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
    return response


def health():
    engine = app_state().engine
    status = {"ready": "ok"}.get(engine.state, engine.state)
    body = {"status": status, **engine.info, "queue_depth": engine.queue_depth(), "active": engine.active}
    stats = engine.decoder_stats()
    if stats is not None:
        body["slots"] = {"busy": stats.slots_busy, "total": stats.slots_total}
        body["kv_cells_used"] = stats.kv_cells_used
        body["prompt_cache"] = {"prompts": stats.prompt_cache_prompts, "bytes": stats.prompt_cache_bytes,
                                "hits": stats.prompt_cache_hits}
    return jsonify(body), 200 if engine.state == "ready" else 503


def metrics():
    payload, content_type = app_state().metrics.render()
    return Response(payload, content_type=content_type)


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class EventStream:
    """The SSE body. The server calls close() when the client goes away (a write
    failed) or the answer is done; that stops the model working on it, even when
    the body was never iterated at all."""

    def __init__(self, generation: Generation, model: str):
        self.generation, self.model = generation, model

    def __iter__(self):
        return _events(self.generation, self.model)

    def close(self) -> None:
        self.generation.cancel()


def _events(generation: Generation, model: str):
    """SSE: one event per text delta, then a final one (or an error event)."""
    try:
        for event in generation:
            if isinstance(event, Delta):
                yield _sse({"type": "delta", "text": event.text})
            else:
                yield _sse({"type": "done", **final(event, model)})
    except ServerError as exc:
        yield _sse({"type": "error", **exc.body()})
    except Exception:
        log.exception("streaming failed")
        yield _sse({"type": "error", **ServerError("internal server error").body()})
    finally:
        generation.cancel()  # no-op once finished


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint if request.endpoint in ENDPOINTS else "other"
    app_state().metrics.count_request(endpoint, response.status_code)
    return response


def _configure_logging() -> None:
    logging.getLogger("server").setLevel(logging.INFO)
    if not logging.getLogger().handlers:  # under gunicorn: nobody has configured the root logger
        logging.basicConfig(format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
