"""Ollama's POST /api/pull, from the Hugging Face Hub: streamed NDJSON progress as Ollama writes it.

`{"model": "hf.co/USER/REPO:QUANT"}` (or `USER/REPO/FILE.gguf`; `name` as older clients
send it) -> `{"status": "pulling manifest"}`, then per file `{"status": "pulling <digest12>",
"digest", "total", "completed"}` at most every 100 ms, `{"status": "verifying sha256 digest"}`
and `{"status": "success"}`; an error ends the stream with `{"error": "..."}`. With
`"stream": false`, one answer once it is done. The download runs in its own thread and
finishes even if the client goes away (a later pull of the same file finds it whole).
"""

from __future__ import annotations

import json
import queue
import threading
from typing import Iterator

from flask import Blueprint, Response, jsonify

from server.errors import InvalidRequest, ServerError
from server.http.body import json_body
from server.http.fields import Limit, check_body
from server.http.state import app_state
from server.library.names import check_name, pull_ref
from server.library.pull import Progress, pull_model

blueprint = Blueprint("pull", __name__)
FIELDS = {
    "model": Limit(str, 1, 256),
    "name": Limit(str, 1, 256),
    "stream": Limit(bool),
    "insecure": Limit(bool),  # accepted: the Hub is always reached over HTTPS
    "force": Limit(bool),
}


@blueprint.route("/api/pull", methods=["POST"])
def pull():
    body = json_body()
    check_body(body, FIELDS)
    field = "model" if body.get("model") is not None else "name"
    name = body.get(field)
    if name is None:
        raise InvalidRequest("'model' is required", "model")
    check_name(name, field)
    ref = pull_ref(name)
    if ref is None:
        raise InvalidRequest(
            f"'{field}' must be a pull reference: hf.co/USER/REPO[:QUANT] or USER/REPO/FILE.gguf", field
        )
    events: queue.SimpleQueue[Progress | ServerError | None] = queue.SimpleQueue()
    catalog = app_state().library.catalog

    def run() -> None:
        try:
            pull_model(ref, catalog, events.put, force=body.get("force") is True)
        except ServerError as exc:
            events.put(exc)
        except Exception as exc:  # noqa: BLE001 - reported, never a traceback to the client
            events.put(ServerError(f"the pull failed: {type(exc).__name__}"))
        events.put(None)

    threading.Thread(target=run, name="pull-request", daemon=True).start()
    if body.get("stream") is False:
        last: Progress | ServerError | None = None
        for event in _drain(events):
            last = event
        if isinstance(last, ServerError):
            raise last
        return jsonify({"status": "success"})
    return Response(_lines(events), mimetype="application/x-ndjson")


def _drain(events: queue.SimpleQueue) -> Iterator[Progress | ServerError]:
    while (event := events.get()) is not None:
        yield event


def _lines(events: queue.SimpleQueue) -> Iterator[str]:
    for event in _drain(events):
        payload = {"error": event.message} if isinstance(event, ServerError) else event.as_dict()
        yield json.dumps(payload) + "\n"
