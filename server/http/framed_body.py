"""A request body as the app reads it (wsgi.input under server/http/worker.py): framing errors are 4xx.

The worker hands a thread a request it has framed itself (framing.py) or, where it could not
frame it surely, as it came; gunicorn's reader then finds what is wrong while the app reads
the body: a chunk size that is not hexadecimal (`zz\\r\\n`), a chunk without its CRLF, bad
trailers, a body cut short. Each is a 400 answered by the app (server/http/errors.py), a
body still arriving when the request's time is up a 408, never a 500, and the connection
closes after the answer, as what follows on it cannot be trusted to start a request.
"""

from __future__ import annotations

from gunicorn.http.errors import (
    ChunkMissingTerminator,
    InvalidChunkExtension,
    InvalidChunkSize,
    NoMoreData,
    ParseException,
)

from server.errors import InvalidRequest, ServerError


class DeadlinePassed(NoMoreData):
    """The request's time ran out while a thread's parser waited for more of it."""


class BodyTimedOut(ServerError):
    status, type = 408, "request_timeout"


# What a framing error while reading a body says to the client (anything else gunicorn's reader
# raises: its trailers, or the connection itself, are broken).
_FRAMING_ERRORS = {
    InvalidChunkSize: "a chunk size is not a hexadecimal number (or its line is too long)",
    ChunkMissingTerminator: "a chunk does not end with CRLF where its size says",
    InvalidChunkExtension: "a chunk extension is malformed",
    NoMoreData: "the body ended before its framing said it would",
}


class FramedBody:
    """A request's body (wsgi.input) as the app reads it: a framing error is a 400 (408 when
    the request's time ran out) and closes the connection after the answer."""

    def __init__(self, body, req) -> None:
        self._body, self._req = body, req

    def read(self, size=None):
        return self._guarded(self._body.read, size)

    def readline(self, size=None):
        return self._guarded(self._body.readline, size)

    def readlines(self, size=None):
        return self._guarded(self._body.readlines, size)

    def __iter__(self):
        return self

    def __next__(self):
        return self._guarded(self._body.__next__)

    def _guarded(self, read, *args):
        try:
            return read(*args)
        except (ParseException, OSError) as exc:  # NoMoreData is an OSError
            self._req.must_close = True  # gunicorn closes the connection after the answer
            if isinstance(exc, DeadlinePassed):
                raise BodyTimedOut("the request did not arrive in time") from None
            what = next((m for kind, m in _FRAMING_ERRORS.items() if isinstance(exc, kind)), None)
            raise InvalidRequest(f"the request body is malformed: {what or 'its framing is broken'}") from None
