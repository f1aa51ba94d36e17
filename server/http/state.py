"""What every route shares: the per-app state, the API-key check, and submitting to a model.

Every dialect hands its one Request to `submit`, naming the model the body named (None:
the default model), so finding and loading the model, the queue, the request timeout,
metrics and the renaming of fields in the engine's errors to the dialect's own names
happen in one place.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from typing import Any

from flask import current_app, g, request

from server.engine.engine import Engine, Generation
from server.engine.request import Request
from server.errors import InvalidRequest, Unauthorized
from server.http.metrics import Metrics
from server.library.catalog import Model
from server.library.entries import Lease
from server.library.library import DEFAULT, Library
from server.library.names import check_name
from server.settings import Settings, parse_duration

EXTENSION = "laptop_llama"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    library: Library
    metrics: Metrics

    @property
    def engine(self) -> Engine | None:
        """The default model's engine, while it is loaded (or loading)."""
        entry = self.library.entry(self.library.default_model().name)
        return entry.engine if entry is not None else None


def app_state() -> AppState:
    """This app's settings, library and metrics (kept in app.extensions)."""
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


def model_of(body: Any, field: str = "model", required: bool = False) -> Model:
    """The library's model the body names in `field` (the default when it names none);
    404 naming what there is for an unknown name, 400 for a name that is not one."""
    name = body.get(field) if isinstance(body, dict) else None
    if name is None or name == "":
        if required:
            raise InvalidRequest(f"'{field}' is required", field)
        return app_state().library.default_model()
    check_name(name, field)
    return app_state().library.catalog.find(name)


def keep_alive_of(body: Any) -> object:
    """The body's keep_alive in seconds (None: forever), or DEFAULT when it gives none."""
    value = body.get("keep_alive") if isinstance(body, dict) else None
    if value is None:
        return DEFAULT
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise InvalidRequest(f"'keep_alive': {exc}", "keep_alive") from None


def use(model: Model | str | None, keep_alive: object = DEFAULT) -> Lease:
    """A lease on the model's loaded engine (loading it first if need be); g.model labels metrics."""
    state = app_state()
    name = model.name if isinstance(model, Model) else model
    lease = state.library.use(name, keep_alive, timeout=state.settings.request_timeout)
    g.model_name = lease.model.name
    return lease


def submit(req: Request, names: dict[str, str], model: Model | str | None, keep_alive: object = DEFAULT) -> Generation:
    """Queue `req` on the model's engine, under the moderation policy (server/http/moderation.py);
    an error about one of its fields names it as the dialect does (`names`: the engine's field
    names -> the dialect's)."""
    from server.http.moderation import moderate  # it imports this module

    return moderate(req, lambda r: _submit(r, names, model, keep_alive))


def _submit(req: Request, names: dict[str, str], model: Model | str | None, keep_alive: object) -> Generation:
    state = app_state()
    if req.timeout is None:  # this app's REQUEST_TIMEOUT (an engine may be shared by apps, as in tests)
        req = replace(req, timeout=state.settings.request_timeout)
    with use(model, keep_alive) as lease:
        label = lease.model.name
        try:
            return lease.engine.submit(req, on_done=lambda done: state.metrics.observe(done, label))
        except InvalidRequest as exc:
            raise exc.renamed(names) from None
