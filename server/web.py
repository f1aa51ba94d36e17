"""What every HTTP handler shares: the per-app state, the API-key check, and
reading a generation to its end for a non-streamed answer.

/api/respond (server/app.py) and the OpenAI routes (server/openai_api.py) both
use these, so the key check and the end-of-answer handling exist once.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from flask import current_app, request

from server.engine import Delta, Engine, Finished, Generation
from server.errors import Unauthorized
from server.metrics import Metrics
from server.settings import Settings

EXTENSION = "laptop_llama"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: Engine
    metrics: Metrics


def app_state() -> AppState:
    """This app's settings, engine and metrics (kept in app.extensions)."""
    return current_app.extensions[EXTENSION]


def authorize(api_key: str | None) -> None:
    if not api_key:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the keys differ, so timing reveals nothing.
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")


def final(finished: Finished, model: str) -> dict:
    return {"model": model, "finish_reason": finished.finish_reason, "usage": finished.usage,
            "timings": finished.timings}


def collect(generation: Generation, model: str) -> dict:
    parts: list[str] = []
    try:
        for event in generation:
            if isinstance(event, Delta):
                parts.append(event.text)
            else:
                return {"response": "".join(parts), **final(event, model)}
    finally:
        generation.cancel()  # no-op once finished; stops the model if we left early
    raise RuntimeError("generation ended without a final event")
