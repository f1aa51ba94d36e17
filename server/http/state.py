"""What every route shares: the per-app state, the API-key check, and submitting to the engine.

Every dialect hands the engine its one Request through `submit`, so the queue,
the request timeout, metrics and the renaming of fields in the engine's errors
to the dialect's own names happen in one place.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace

from flask import current_app, request

from server.engine.engine import Engine, Generation
from server.engine.request import Request
from server.errors import InvalidRequest, Unauthorized
from server.http.metrics import Metrics
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


def key_given(api_key: str | None) -> bool:
    """Whether this request may pass: no key is set, or it carries the key."""
    if not api_key:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest takes the same time wherever the keys differ, so timing reveals nothing.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), api_key.encode())


def authorize(api_key: str | None) -> None:
    if not key_given(api_key):
        raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>'")


def submit(req: Request, names: dict[str, str]) -> Generation:
    """Queue `req` on this app's engine; an error about one of its fields names it as the
    dialect does (`names`: the engine's field names -> the dialect's)."""
    state = app_state()
    if req.timeout is None:  # this app's REQUEST_TIMEOUT (an engine may be shared by apps, as in tests)
        req = replace(req, timeout=state.settings.request_timeout)
    try:
        return state.engine.submit(req, on_done=state.metrics.observe)
    except InvalidRequest as exc:
        raise exc.renamed(names) from None
