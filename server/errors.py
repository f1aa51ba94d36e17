"""The server's domain errors: what a client may be told, with its HTTP status.

The engine and the model code raise these without knowing about HTTP frameworks;
server/http/errors.py is the one place they become JSON answers. Every error a
client sees is `{"error": {"type", "message"}}` plus optional details (a
dialect may reshape it). `field` names the input in the engine's terms
("messages", "prompt"); each dialect renames it to what its users wrote.
"""

from __future__ import annotations

from typing import Any


class ServerError(Exception):
    """Base of the errors a client may be told about: status, type and details."""

    status = 500
    type = "internal_error"
    headers: dict[str, str] = {}

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return {"error": {"type": self.type, "message": self.message, **self.details}}


class InvalidRequest(ServerError):
    status, type = 400, "invalid_request"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message, **({"field": field} if field else {}))
        self.field = field

    def renamed(self, names: dict[str, str]) -> "InvalidRequest":
        """The same error with its field (and the field in its message) as a dialect names it."""
        if self.field is None or self.field.split("[")[0].split(".")[0] not in names:
            return self
        head = self.field.split("[")[0].split(".")[0]
        field = names[head] + self.field[len(head) :]
        return InvalidRequest(self.message.replace(f"'{self.field}'", f"'{field}'"), field)


class PromptTooLong(ServerError):
    status, type = 400, "prompt_too_long"

    def __init__(self, prompt_tokens: int, max_tokens: int, n_ctx: int):
        super().__init__(
            f"the prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the context of {n_ctx} tokens",
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            n_ctx=n_ctx,
        )


class ModelNotFound(ServerError):
    status, type = 404, "model_not_found"


class Unauthorized(ServerError):
    status, type = 401, "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(ServerError):
    """The request's Host is not one this server answers to (a DNS-rebinding page, or a missing ALLOWED_HOSTS)."""

    status, type = 403, "forbidden"


class UnsupportedMediaType(ServerError):
    status, type = 415, "unsupported_media_type"


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

    def __init__(self) -> None:
        super().__init__("the model failed while answering; see the server log")
