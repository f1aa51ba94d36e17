"""The Flask app factory: the dialects' routes and the operations routes over the model library.

`create_app(settings)` builds the library (server/library/) and starts loading the
default model at once in its own thread, so /api/health answers 503 until it is ready;
`create_app(settings, engine)` serves an engine the caller built (and closes) as the
default model, beside the rest of the library. Per-app state (settings, library,
metrics) lives in app.extensions; nothing here calls llama.cpp.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request

from server.engine.engine import Engine
from server.http import guard, models_api, moderation, ops, pull, respond, tokens
from server.http.errors import register_error_handlers
from server.http.fields import sampling_problem
from server.http.metrics import Metrics
from server.http.ollama import routes as ollama
from server.http.openai.routes import blueprint as openai_blueprint
from server.http.retrieval import embeddings, rerank
from server.http.state import EXTENSION, AppState, app_state
from server.library.budget import budget_from
from server.library.catalog import Catalog, Model
from server.library.library import Library
from server.model.files import check_gguf, check_model_files, ensure_smollm2, models_dir
from server.settings import Settings

ENDPOINTS = {
    "respond.respond",
    "ops.health",
    "ops.metrics",
    "ops.index",
    "v1.chat_completions",
    "v1.completions",
    "v1.models",
    "moderation.moderations",
    "tokens.tokenize",
    "tokens.detokenize",
    *(f"ollama.{name}" for name in ("chat", "generate", "tags", "show", "ps", "version", "delete", "copy")),
    "pull.pull",
    *(f"models.{name}" for name in ("models", "load", "unload")),
    *(f"embed.{name}" for name in ("v1_embeddings", "ollama_embed", "ollama_embeddings", "embedding")),
    "rerank.rerank",
}


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> Flask:
    """The WSGI app. Without `engine`, the default model starts loading at once."""
    settings = settings or Settings.from_env()
    _configure_logging()
    library = build_library(settings)
    if engine is None:
        library.preload(library.default_model().name)
    else:
        library.serve_as_default(
            engine, Model(engine.model.path.name.removesuffix(".gguf"), engine.model.path, "setting")
        )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = AppState(settings, library, Metrics(library))
    register_error_handlers(app)
    guard.install(app)  # Host, CORS, API key and content type before every route; security headers after
    dialects = (respond.blueprint, openai_blueprint, ollama.blueprint, pull.blueprint, models_api.blueprint)
    for blueprint in (*dialects, embeddings.blueprint, rerank.blueprint, tokens.blueprint, ops.blueprint):
        app.register_blueprint(blueprint)
    moderation.install(app)  # the guard, its metrics and POST /v1/moderations
    app.after_request(_count_request)
    return app


def build_catalog(settings: Settings) -> Catalog:
    """The models of MODELS_DIR, the Hugging Face cache and the presets file (SettingsError for a bad preset)."""
    folder = models_dir(settings)
    return Catalog(settings, folder, check_sampling=sampling_problem, default_file=lambda: ensure_smollm2(folder))


def build_library(settings: Settings) -> Library:
    """The library, with its memory budget."""
    return Library(settings, build_catalog(settings), budget_from(settings))


def check_library(settings: Settings) -> Model:
    """What the entry points run before any worker starts: the presets file parses and checks,
    the default model exists (the embedded one is fetched here, once) and is a whole GGUF file,
    and so is the draft model if one is set. SettingsError or ModelFileError naming what is wrong."""
    check_model_files(settings, resolve=False)
    default = build_catalog(settings).default()
    check_gguf(default.path)
    return default


def _count_request(response: Response) -> Response:
    endpoint = request.endpoint if request.endpoint in ENDPOINTS else "other"
    # The label names our routes by their path's last word, OpenAI's and Ollama's as v1.<route>, ollama.<route>.
    label = endpoint if endpoint.startswith(("v1.", "ollama.", "models.")) else endpoint.rsplit(".", 1)[-1]
    label = "ollama.pull" if endpoint == "pull.pull" else label
    app_state().metrics.count_request(label, response.status_code, g.get("model_name", ""))
    return response


def _configure_logging() -> None:
    logging.getLogger("server").setLevel(logging.INFO)
    if not logging.getLogger().handlers:  # under gunicorn: nobody has configured the root logger
        logging.basicConfig(format="%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s")
