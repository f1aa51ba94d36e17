"""Relaying an engine Generation to a client: whole (`collect`) or as server-sent events.

A non-streamed answer writes nothing until it is complete, so `collect` watches
the client's socket meanwhile and stops the generation if it hangs up. A
streamed answer is an `EventStream`: the WSGI server calls close() when the
client goes away (a write failed) or the answer is done, which cancels the
generation even when the body was never iterated.
"""

from __future__ import annotations

import json
import logging
import select
import socket
from typing import Callable, Iterator

from server.engine.engine import Generation
from server.engine.request import Delta, Done
from server.errors import ServerError

log = logging.getLogger(__name__)
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def final(done: Done, model: str) -> dict:
    return {"model": model, "finish_reason": done.finish_reason, "usage": done.usage, "timings": done.timings}


def client_gone_check(environ: dict) -> Callable[[], bool] | None:
    """Whether the client has closed its connection, for a handler that writes nothing
    until the answer is complete. Needs the socket, which gunicorn puts in the environ;
    under other servers (Flask's test client) there is no check."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None

    def gone() -> bool:
        try:
            # poll, not select: with many connections open the descriptor may be past 1024.
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            # Readable with nothing to read is the client's FIN; waiting bytes (a
            # pipelined request) mean it is still there.
            return bool(poller.poll(0)) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):  # reset, or already closed
            return True

    return gone


def collect(generation: Generation, client_gone: Callable[[], bool] | None = None) -> tuple[str, Done]:
    """The whole answer's text and its Done event."""
    deltas, done = collect_deltas(generation, client_gone)
    return "".join(d.text for d in deltas), done


def collect_deltas(generation: Generation, client_gone: Callable[[], bool] | None = None) -> tuple[list[Delta], Done]:
    """Every Delta of the answer (text and log-probabilities) and its Done event."""
    deltas: list[Delta] = []
    try:
        for event in generation.events(client_gone):
            if isinstance(event, Delta):
                deltas.append(event)
            else:
                return deltas, event
    finally:
        generation.cancel()  # no-op once finished; stops the model if we left early
    raise RuntimeError("generation ended without a final event")


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class EventStream:
    """A streamed answer's body: `render` turns the generation's events into wire text and
    `error` an error into the dialect's last message (an unexpected one is logged)."""

    def __init__(
        self, generation: Generation, render: Callable[[Generation], Iterator[str]], error: Callable[[ServerError], str]
    ):
        self.generation, self.render, self.error = generation, render, error

    def __iter__(self) -> Iterator[str]:
        try:
            yield from self.render(self.generation)
        except ServerError as exc:
            yield self.error(exc)
        except Exception:
            log.exception("streaming failed")
            yield self.error(ServerError("internal server error"))
        finally:
            self.generation.cancel()  # no-op once finished

    def close(self) -> None:
        self.generation.cancel()
