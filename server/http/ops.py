"""Operations routes: health, Prometheus metrics and the chat page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from server.http.state import app_state

blueprint = Blueprint("ops", __name__)


@blueprint.route("/api/health", methods=["GET"])
def health():
    engine = app_state().engine
    status = {"ready": "ok"}.get(engine.state, engine.state)
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
    return jsonify(body), 200 if engine.state == "ready" else 503


@blueprint.route("/metrics", methods=["GET"])
def metrics():
    payload, content_type = app_state().metrics.render()
    return Response(payload, content_type=content_type)


@blueprint.route("/", methods=["GET"])
def index():
    """The chat page (server/http/static/); its script talks to /v1/chat/completions."""
    response = current_app.send_static_file("index.html")
    # Only our own files run on the page: no inline script, nothing from elsewhere.
    response.headers["Content-Security-Policy"] = "default-src 'self'; frame-ancestors 'none'"
    return response
