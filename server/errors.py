"""The server's domain exceptions, and the one place they become JSON errors.

Every error a client sees is `{"error": {"type", "message"}}` plus optional
details. Anything unexpected becomes a 500 with a generic message; the details
go to the log only, never to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ServerError(Exception):
    """Base of the errors a client may be told about: status, type and details."""
    status = 500
    type = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict:
        return {"error": {"type": self.type, "message": self.message, **self.details}}


class InvalidRequest(ServerError):
    status, type = 400, "invalid_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, **({"field": field} if field else {}))


class PromptTooLong(ServerError):
    status, type = 400, "prompt_too_long"

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int):
        super().__init__(f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                         f"context of {n_ctx} tokens", prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                         n_ctx=n_ctx)


class Unauthorized(ServerError):
    status, type = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class ModelLoading(ServerError):
    status, type = 503, "loading"
    headers = {"Retry-After": "5"}


class ModelFailed(ServerError):
    status, type = 503, "model_unavailable"


class QueueFull(ServerError):
    status, type = 503, "queue_full"

    def __init__(self, queue_size: int, retry_after: int = 2):
        super().__init__(f"all {queue_size} queue places are taken; retry shortly")
        self.headers = {"Retry-After": str(retry_after)}


class RequestTimeout(ServerError):
    status, type = 504, "timeout"


class ClientGone(ServerError):
    """The client closed its connection before its answer was ready; nobody reads this reply."""
    status, type = 499, "client_closed_request"  # nginx's status for it


class GenerationFailed(ServerError):
    """The generation core raised; the cause is logged where it happened."""
    status, type = 500, "internal_error"

    def __init__(self):
        super().__init__("the model failed while answering; see the server log")


# Werkzeug's own HTTP errors (bad JSON, body too large, unknown route) by status.
HTTP_ERROR_TYPES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed",
                    413: "body_too_large"}


def error_response(exc: ServerError):
    response = jsonify(exc.body())
    response.status_code = exc.status
    response.headers.update(exc.headers)
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ServerError)
    def _domain(exc: ServerError):
        return error_response(exc)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        status = exc.code or 500
        message = exc.description if status < 500 else "internal server error"
        if status == 413:
            message = f"request body is larger than {app.config['MAX_CONTENT_LENGTH']} bytes"
        response = jsonify({"error": {"type": HTTP_ERROR_TYPES.get(status, "http_error"), "message": message}})
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(ServerError("internal server error"))
