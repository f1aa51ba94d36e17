"""The Flask app factory: the dialects' routes and the operations routes over one engine.

`create_app(settings, engine)` receives a built engine (or builds one, which starts
loading the model at once in its own thread, so /api/health answers 503 until it
is ready). Per-app state (settings, engine, metrics) lives in app.extensions;
nothing here calls llama.cpp.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, request

from server.engine.engine import Engine
from server.http import embeddings, guard, ollama, ops, rerank, respond, tokens
from server.http.errors import register_error_handlers
from server.http.metrics import Metrics
from server.http.openai import blueprint as openai_blueprint
from server.http.state import EXTENSION, AppState, app_state
from server.settings import Settings

ENDPOINTS = {
    "respond.respond",
    "ops.health",
    "ops.metrics",
    "ops.index",
    "v1.chat_completions",
    "v1.completions",
    "v1.models",
    "tokens.tokenize",
    "tokens.detokenize",
    *(f"ollama.{name}" for name in ("chat", "generate", "tags", "show", "ps", "version")),
    *(f"embed.{name}" for name in ("v1_embeddings", "ollama_embed", "ollama_embeddings", "embedding")),
    "rerank.rerank",
}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """The WSGI app. Without `engine`, one is created and starts loading the model at once."""
    settings = settings or Settings.from_env()
    _configure_logging()
    if engine is None:
        engine = Engine(settings).start()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = AppState(settings, engine, Metrics(engine))
    register_error_handlers(app)
    guard.install(app)  # Host, CORS, API key and content type before every route; security headers after
    blueprints = (respond.blueprint, openai_blueprint, ollama.blueprint, tokens.blueprint, ops.blueprint)
    for blueprint in (*blueprints, embeddings.blueprint, rerank.blueprint):
        app.register_blueprint(blueprint)
    app.after_request(_count_request)
    return app


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint if request.endpoint in ENDPOINTS else "other"
    # The label names our routes by their path's last word, OpenAI's and Ollama's as v1.<route>, ollama.<route>.
    label = endpoint if endpoint.startswith(("v1.", "ollama.")) else endpoint.rsplit(".", 1)[-1]
    app_state().metrics.count_request(label, response.status_code)
    return response


def _configure_logging() -> None:
    logging.getLogger("server").setLevel(logging.INFO)
    if not logging.getLogger().handlers:  # under gunicorn: nobody has configured the root logger
        logging.basicConfig(format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
