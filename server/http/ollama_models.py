"""The served model as Ollama describes models: its name, /api/tags, /api/show and /api/ps entries.

This server serves one GGUF file. Its Ollama name is the file name without `.gguf`
(`name:latest` means the same, any case), and a request naming another model gets a
404 that names the served one. The facts come from the file and its GGUF header (read
once per file version), so /api/tags and /api/show answer while the model loads.
"""

from __future__ import annotations

import functools
import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

from server.errors import ModelNotFound
from server.http.fields import DEFAULTS
from server.model import describe
from server.model.ggufinfo import GGUFInfo, read_gguf_info

# The model stays loaded while the server runs (keep_alive is accepted and ignored).
NEVER = "2999-12-31T23:59:59Z"


def served_name(engine) -> str:
    return engine.model.path.name.removesuffix(".gguf")


def check_name(engine, name: str) -> None:
    """ModelNotFound (404) unless `name` is the served model's, with or without `:latest`."""
    served = served_name(engine)
    if name.lower().removesuffix(":latest") != served.lower():
        raise ModelNotFound(f"model '{name}' not found: this server serves '{served}' only")


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC with microseconds, as Ollama writes times."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


@functools.lru_cache(maxsize=4)
def _header(path: str, _version: tuple[int, int]) -> GGUFInfo:
    return read_gguf_info(Path(path))


def _facts(engine) -> tuple[Path, os.stat_result, GGUFInfo]:
    """(path, os.stat result, GGUF header) of the served file."""
    path = engine.model.path
    stat = path.stat()
    return path, stat, _header(str(path), (stat.st_size, stat.st_mtime_ns))


def entry(engine) -> dict:
    """The model as /api/tags lists it; /api/ps adds to it."""
    path, stat, header = _facts(engine)
    metadata = header.metadata
    arch = str(metadata.get("general.architecture", "unknown"))
    name = served_name(engine) + ":latest"
    # Identifies this version of the file (name, size, time) without reading gigabytes to hash it.
    digest = hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": timestamp(stat.st_mtime),
        "size": stat.st_size,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch],
            "parameter_size": str(metadata.get("general.size_label", "")),
            "quantization_level": describe.quantization(metadata),
        },
    }


def show(engine, settings) -> dict:
    """/api/show: the header's metadata (arrays left empty, as Ollama does unless verbose),
    the chat template and the server's sampling defaults as Modelfile parameters."""
    path, stat, header = _facts(engine)
    metadata = header.metadata
    template, label = describe.chat_template(settings, {k: str(v) for k, v in metadata.items()})
    info = {k: ([] if k in header.arrays else v) for k, v in metadata.items() if k != "tokenizer.chat_template"}
    parameters = {
        "num_ctx": settings.n_ctx,
        "num_predict": settings.max_tokens,
        **{k: DEFAULTS[k] for k in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")},
    }
    return {
        "license": str(metadata.get("general.license", "")),
        "modelfile": f"# Served by laptop-llama; its settings are the server's (LLAMA_SERVER_*).\nFROM {path}\n",
        "parameters": "\n".join(f"{k:<30} {v}" for k, v in parameters.items()),
        "template": template or label,
        "details": entry(engine)["details"],
        "model_info": info,
        "capabilities": ["completion", "tools"],  # tools: any model, in the generic format (server/model/tools.py)
        "modified_at": timestamp(stat.st_mtime),
    }


def running(engine) -> list[dict]:
    """/api/ps: the model once it is loaded (nothing while it loads)."""
    if engine.state != "ready":
        return []
    base = entry(engine)
    offload = engine.info.get("offload", {})
    layers, total = offload.get("n_gpu_layers", 0), offload.get("total_layers", 0) or 1
    return [
        {
            **base,
            "expires_at": NEVER,
            "size_vram": base["size"] * min(layers, total) // total,
            "context_length": engine.info.get("n_ctx"),
        }
    ]
