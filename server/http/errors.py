"""The one place errors become JSON answers: domain errors, Werkzeug's HTTP errors, anything else.

Anything unexpected becomes a 500 with a generic message; the details go to the
log only, never to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from server.errors import ServerError

log = logging.getLogger(__name__)

# Werkzeug's own HTTP errors (bad JSON, body too large, unknown route) by status.
HTTP_ERROR_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


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
