"""OpenAI-compatible routes under /v1: chat completions, completions and models.

The same engine, queue, API key and metrics as /api/respond; only the wire format
differs. Chat and completions share one code path and differ by a row of SHAPES
(ids, object names, how a choice and a streamed delta look). Errors keep the one
mapping from domain exceptions to statuses in server/http/errors.py: an after-request
hook only rewrites our error JSON into OpenAI's {"error": {message, type, param,
code}} for /v1 paths, and a failure mid-stream is sent in the same shape.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

from flask import Blueprint, Response, jsonify, request

from server.engine.engine import Generation
from server.engine.request import Delta
from server.errors import InvalidRequest, ServerError
from server.http.openai_schema import NAMES, OpenAICall, validate_openai
from server.http.state import app_state, authorize, submit
from server.http.streaming import SSE_HEADERS, EventStream, client_gone_check, collect, sse

log = logging.getLogger(__name__)
blueprint = Blueprint("v1", __name__, url_prefix="/v1")

# OpenAI's error "type" by HTTP status (the names llama.cpp's server uses), and our codes renamed
# where OpenAI has its own word for the same thing; the rest keep our type as the code.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    503: "unavailable_error",
    504: "timeout_error",
}
ERROR_CODES = {"prompt_too_long": "context_length_exceeded", "unauthorized": "invalid_api_key"}


@dataclass(frozen=True)
class Shape:
    id_prefix: str
    object: str
    chunk_object: str
    choice: Callable[[str, str], dict]  # (text, finish_reason) -> the whole answer's choice
    delta: Callable[[str], dict]  # text -> a streamed choice
    last: Callable[[str], dict]  # finish_reason -> the closing streamed choice
    first: Callable[[], dict] | None = None  # the opening streamed choice, if the format has one


SHAPES = {
    "chat": Shape(
        "chatcmpl-",
        "chat.completion",
        "chat.completion.chunk",
        choice=lambda text, reason: {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": reason,
        },
        delta=lambda text: {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None},
        last=lambda reason: {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason},
        first=lambda: {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
    ),
    "completion": Shape(
        "cmpl-",
        "text_completion",
        "text_completion",
        choice=lambda text, reason: {"index": 0, "text": text, "logprobs": None, "finish_reason": reason},
        delta=lambda text: {"index": 0, "text": text, "logprobs": None, "finish_reason": None},
        last=lambda reason: {"index": 0, "text": "", "logprobs": None, "finish_reason": reason},
    ),
}


@blueprint.before_request
def _check_key():
    authorize(app_state().settings.api_key)


@blueprint.route("/models", methods=["GET"])
def models():
    engine = app_state().engine
    engine.check_ready()  # while loading: the same 503 a generation would get
    return jsonify(
        {
            "object": "list",
            "data": [
                {"id": engine.info["model"], "object": "model", "created": int(time.time()), "owned_by": "laptop-llama"}
            ],
        }
    )


@blueprint.route("/chat/completions", methods=["POST"])
def chat_completions():
    return _answer(_validated("chat"), SHAPES["chat"])


@blueprint.route("/completions", methods=["POST"])
def completions():
    return _answer(_validated("completion"), SHAPES["completion"])


def _validated(kind: str) -> OpenAICall:
    settings = app_state().settings
    body = request.get_json(force=True, silent=True)
    if body is None:
        raise InvalidRequest("the body must be valid JSON")
    return validate_openai(kind, body, settings.max_tokens, settings.max_tokens_ceiling)


def _answer(call: OpenAICall, shape: Shape):
    generation = submit(call.request, NAMES)
    head = {
        "id": shape.id_prefix + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": app_state().engine.info["model"],
    }
    if call.request.stream:
        chunks = Chunks(shape, head, call.include_usage)
        return Response(
            EventStream(generation, chunks.render, _sse_error), mimetype="text/event-stream", headers=SSE_HEADERS
        )
    text, done = collect(generation, client_gone_check(request.environ))
    return jsonify(
        {
            **head,
            "object": shape.object,
            "choices": [shape.choice(text, done.finish_reason)],
            "usage": done.usage,
            "timings": done.timings,
        }
    )


class Chunks:
    """The engine's events as OpenAI's streamed chunks, ending with `data: [DONE]`."""

    def __init__(self, shape: Shape, head: dict, include_usage: bool):
        self.shape, self.head, self.include_usage = shape, head, include_usage

    def _chunk(self, choices: list[dict], **extra) -> str:
        return sse(
            {
                "id": self.head["id"],
                "object": self.shape.chunk_object,
                "created": self.head["created"],
                "model": self.head["model"],
                "choices": choices,
                **extra,
            }
        )

    def render(self, generation: Generation) -> Iterator[str]:
        if self.shape.first:
            yield self._chunk([self.shape.first()])
        for event in generation:
            if isinstance(event, Delta):
                yield self._chunk([self.shape.delta(event.text)])
                continue
            # llama.cpp's server also sends its timings here; the chat page shows tokens/s from them.
            yield self._chunk([self.shape.last(event.finish_reason)], timings=event.timings)
            if self.include_usage:
                yield self._chunk([], usage=event.usage)
        yield "data: [DONE]\n\n"


def _sse_error(exc: ServerError) -> str:
    return sse(openai_error(exc.body()["error"], exc.status))


def openai_error(error: dict, status: int) -> dict:
    """Our {"type", "message", "field"?} error -> OpenAI's {"message", "type", "param", "code"}."""
    field = error.get("field")
    return {
        "error": {
            "message": error.get("message", ""),
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": field,
            "code": ERROR_CODES.get(error.get("type", ""), error.get("type")),
        }
    }


@blueprint.after_app_request
def _openai_errors(response: Response) -> Response:
    """Reshape error answers under /v1 (those of unknown /v1 routes too) into OpenAI's format."""
    if not request.path.startswith("/v1/") or response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and "param" not in body["error"]:
        response.set_data(json.dumps(openai_error(body["error"], response.status_code)))
    return response
