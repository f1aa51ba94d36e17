"""The library's models as each ecosystem lists them: Ollama's /api/tags, /api/show and /api/ps,
OpenAI's /v1/models and llama-server's router /models.

A model's name is its file's stem (`name:latest` means the same, any case). The facts
come from the file and its GGUF header (read once per file version), so every model is
described without loading it; /api/ps adds what llama.cpp measured once it loaded.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone

from server.http.defaults import SHOWN
from server.http.defaults import defaults as dialect_defaults
from server.http.state import app_state
from server.library.catalog import Model
from server.library.entries import Entry
from server.model import describe
from server.model.ggufinfo import GGUFInfo, read_gguf_info

# What /api/ps says of a model kept forever (Ollama stores it as the largest duration: ~292 years).
FOREVER = "2318-04-11T23:47:16Z"


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, as Ollama writes times."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def _facts(model: Model) -> tuple[os.stat_result, GGUFInfo]:
    """(os.stat result, GGUF header) of the model's file."""
    stat = model.path.stat()
    return stat, read_gguf_info(model.path)  # kept per file version by read_gguf_info itself


def digest(model: Model, stat: os.stat_result) -> str:
    # Identifies this version of the file (path, size, time) without reading gigabytes to hash it.
    return hashlib.sha256(f"{model.path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()


def entry(model: Model) -> dict:
    """The model as /api/tags lists it; /api/ps adds to it."""
    stat, header = _facts(model)
    metadata = header.metadata
    arch = str(metadata.get("general.architecture", "unknown"))
    name = model.name if ":" in model.name else model.name + ":latest"
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(stat.st_mtime),
        "size": stat.st_size,
        "digest": digest(model, stat),
        "details": {
            "parent_model": model.preset.source or "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": str(metadata.get("general.size_label", "")),
            "quantization_level": describe.quantization(metadata),
        },
    }


def tags() -> list[dict]:
    listed = []
    for model in app_state().library.catalog.models():
        try:
            listed.append(entry(model))
        except (OSError, ValueError):  # a file removed or damaged since the listing: leave it out
            continue
    return listed


def show(model: Model) -> dict:
    """/api/show: the header's metadata (arrays left empty, as Ollama does unless verbose), the chat
    template, and as Modelfile parameters the values a request to /api/chat or /api/generate gets when
    its options leave them out (Ollama's defaults under the model's preset)."""
    settings = app_state().library.settings_for(model)
    stat, header = _facts(model)
    metadata = header.metadata
    template, label = describe.chat_template(settings, {k: str(v) for k, v in metadata.items()})
    info = {k: ([] if k in header.arrays else v) for k, v in metadata.items() if k != "tokenizer.chat_template"}
    sampling = dialect_defaults("ollama", model.preset.sampling)
    parameters = {
        "num_ctx": settings.n_ctx,
        "num_predict": settings.max_tokens,
        **{k: sampling[k] for k in SHOWN if sampling[k] is not None},  # a seed left out is random: none to show
    }
    return {
        "license": str(metadata.get("general.license", "")),
        "modelfile": f"# Served by laptop-llama; its settings are the server's and its preset's.\nFROM {model.path}\n",
        "parameters": "\n".join(f"{k:<30} {_number(v)}" for k, v in parameters.items()),
        "template": template or label,
        "details": entry(model)["details"],
        "model_info": info,
        "capabilities": _capabilities(metadata),
        "modified_at": timestamp(stat.st_mtime),
    }


def _number(value: float) -> str:
    """A number as Ollama writes a parameter (Go's %v): 1 rather than 1.0, 0.05 as it is."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _capabilities(metadata: dict) -> list[str]:
    """An embedding model (its GGUF names a pooling, as Ollama checks) embeds; any other completes,
    with tools in the generic format (server/model/tools.py)."""
    arch = str(metadata.get("general.architecture", ""))
    return ["embedding"] if f"{arch}.pooling_type" in metadata else ["completion", "tools"]


def running() -> list[dict]:
    """/api/ps: the loaded models, with what they measurably take and when they expire."""
    now, listed = time.monotonic(), []
    for loaded in app_state().library.entries():
        if loaded.engine.state != "ready":
            continue
        try:
            base = entry(loaded.model)
        except (OSError, ValueError):
            continue
        listed.append({**base, **_residence(loaded, now)})
    return sorted(listed, key=lambda m: m["expires_at"], reverse=True)


def _residence(loaded: Entry, now: float) -> dict:
    left = loaded.expires_in(now)
    return {
        "expires_at": FOREVER if left is None else timestamp(time.time() + max(left, 0)),
        "size": loaded.memory.total,
        "size_vram": loaded.memory.vram,
        "context_length": loaded.engine.info.get("n_ctx"),
    }


def status(model: Model) -> dict:
    """llama-server's `status` of a model in its router's listings."""
    library = app_state().library
    value = library.status(model)
    if value == "failed":
        return {"value": "unloaded", "failed": True, "reason": library.failures.get(model.name, "")}
    return {"value": value}


def openai_models() -> list[dict]:
    """/v1/models: every model of the library, OpenAI's shape plus llama-server's `status`."""
    listed, library = [], app_state().library
    default = library.default_model().name
    for model in library.catalog.models():
        try:
            created = int(model.path.stat().st_mtime)
        except OSError:
            continue
        listed.append(
            {
                "id": model.name,
                "object": "model",
                "created": created,
                "owned_by": "laptop-llama",
                "aliases": list(model.aliases),
                "status": status(model),
                **({"default": True} if model.name == default else {}),
            }
        )
    return listed


def router_models() -> list[dict]:
    """llama-server's router /models: /v1/models' entries with where each came from."""
    by_name = {m.name: m for m in app_state().library.catalog.models()}
    return [{**item, "source": by_name[item["id"]].source} for item in openai_models() if item["id"] in by_name]
