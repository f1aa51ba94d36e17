"""What every HTTP handler shares: the per-app state, the API-key check, and
reading a generation to its end for a non-streamed answer (stopping it if the
client hangs up meanwhile).

/api/respond (server/app.py) and the OpenAI routes (server/openai_api.py) both
use these, so the key check and the end-of-answer handling exist once.
"""

from __future__ import annotations

import hmac
import select
import socket
from dataclasses import dataclass
from typing import Callable

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


def client_gone_check(environ: dict) -> Callable[[], bool] | None:
    """Whether the client has closed its connection, for a handler that writes nothing
    until the answer is complete. Needs the socket, which gunicorn puts in the environ;
    under other servers (Flask's test client) there is no check."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            # Readable with nothing to read is the client's FIN; waiting bytes (a
            # pipelined request) mean it is still there.
            return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):  # reset, or already closed
            return True
    return gone


def collect(generation: Generation, model: str, client_gone: Callable[[], bool] | None = None) -> dict:
    parts: list[str] = []
    try:
        for event in generation.events(client_gone):
            if isinstance(event, Delta):
                parts.append(event.text)
            else:
                return {"response": "".join(parts), **final(event, model)}
    finally:
        generation.cancel()  # no-op once finished; stops the model if we left early
    raise RuntimeError("generation ended without a final event")
