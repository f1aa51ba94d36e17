"""Operations routes: health (the liveness probe), Prometheus metrics and the chat page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from server.http.state import app_state, key_given

blueprint = Blueprint("ops", __name__)


@blueprint.route("/api/health", methods=["GET"])
def health():
    """The liveness probe. With API_KEY set and not given: only whether the server is up."""
    state = app_state()
    engine = state.engine
    status = {"ready": "ok"}.get(engine.state, engine.state)
    code = 200 if engine.state == "ready" else 503
    if not key_given(state.settings.api_key):
        return jsonify({"status": status}), code
    body = {"status": status, **engine.info, "queue_depth": engine.queue_depth(), "active": engine.active}
    stats = engine.decoder_stats()
    if stats is not None:
        body["slots"] = {"busy": stats.slots_busy, "total": stats.slots_total}
        body["kv_cells_used"] = stats.kv_cells_used
        body["prompt_cache"] = {
            "prompts": stats.prompt_cache_prompts,
            "bytes": stats.prompt_cache_bytes,
            "limit_bytes": stats.prompt_cache_limit_bytes,
            "hits": stats.prompt_cache_hits,
        }
    return jsonify(body), code


@blueprint.route("/metrics", methods=["GET"])
def metrics():
    payload, content_type = app_state().metrics.render()
    return Response(payload, content_type=content_type)


@blueprint.route("/", methods=["GET"])
def index():
    """The chat page (server/http/static/); its script talks to /v1/chat/completions."""
    # Its Content-Security-Policy (only our own files run, no framing) is set for every response in guard.py.
    return current_app.send_static_file("index.html")
