"""Operations routes: health (the liveness probe), Prometheus metrics and the chat page."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from server.http.state import app_state, key_given

blueprint = Blueprint("ops", __name__)


@blueprint.route("/api/health", methods=["GET"])
def health():
    """The liveness probe: 200 while the default model serves (or can be loaded on demand), 503
    while it loads or after it failed. With API_KEY set and not given: only whether the server is up."""
    state = app_state()
    library = state.library
    default_state = library.status(library.default_model())
    status = {"loaded": "ok", "unloaded": "ok", "unloading": "ok"}.get(default_state, default_state)
    code = 200 if status == "ok" else 503
    if not key_given(state.settings.api_key):
        return jsonify({"status": status}), code
    body: dict = {"status": status}
    engine = state.engine
    if engine is not None:
        body.update({**engine.info, "queue_depth": engine.queue_depth(), "active": engine.active})
        body.update(_decoder(engine))
    body["models"] = [_loaded(entry) for entry in library.entries()]
    body["budget"] = {"ram": library.budget.ram, "vram": library.budget.vram}
    return jsonify(body), code


def _decoder(engine) -> dict:
    stats = engine.decoder_stats()
    if stats is None:
        return {}
    return {
        "slots": {"busy": stats.slots_busy, "total": stats.slots_total},
        "kv_cells_used": stats.kv_cells_used,
        "prompt_cache": {
            "prompts": stats.prompt_cache_prompts,
            "bytes": stats.prompt_cache_bytes,
            "limit_bytes": stats.prompt_cache_limit_bytes,
            "hits": stats.prompt_cache_hits,
        },
    }


def _loaded(entry) -> dict:
    engine = entry.engine
    return {
        "name": entry.model.name,
        "state": engine.state,
        "pinned": entry.pinned,
        "memory": entry.memory.as_dict(),
        "measured": entry.measured,
        "queue_depth": engine.queue_depth(),
        "active": engine.active,
    }


@blueprint.route("/metrics", methods=["GET"])
def metrics():
    payload, content_type = app_state().metrics.render()
    return Response(payload, content_type=content_type)


@blueprint.route("/", methods=["GET"])
def index():
    """The chat page (server/http/static/); its script talks to /v1/chat/completions."""
    # Its Content-Security-Policy (only our own files run, no framing) is set for every response in guard.py.
    return current_app.send_static_file("index.html")
