"""OpenAI-compatible routes under /v1: chat completions, completions and models.

The same engine, queue, API key and metrics as /api/respond; only the wire format
differs. Chat and completions share one code path and differ by a row of SHAPES
(ids, object names) and by how server/http/openai/answer.py builds their choices. Errors keep the one
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
from server.errors import ServerError
from server.http.body import json_body
from server.http.ollama import models as library_views
from server.http.openai.answer import ChoiceBuilder
from server.http.openai.schema import NAMES, OpenAICall, validate_openai
from server.http.state import app_state, keep_alive_of, model_of, submit
from server.http.streaming import SSE_HEADERS, EventStream, client_gone_check, collect_deltas, sse
from server.library.catalog import Model

log = logging.getLogger(__name__)
blueprint = Blueprint("v1", __name__, url_prefix="/v1")

# OpenAI's error "type" by HTTP status (the names llama.cpp's server uses), and our codes renamed
# where OpenAI has its own word for the same thing; the rest keep our type as the code.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    503: "unavailable_error",
    504: "timeout_error",
}
ERROR_CODES = {"prompt_too_long": "context_length_exceeded", "unauthorized": "invalid_api_key"}


@dataclass(frozen=True)
class Shape:
    id_prefix: str
    object: str
    chunk_object: str
    first: Callable[[], dict] | None = None  # the opening streamed choice, if the format has one


SHAPES = {
    "chat": Shape(
        "chatcmpl-",
        "chat.completion",
        "chat.completion.chunk",
        first=lambda: {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        },
    ),
    "completion": Shape("cmpl-", "text_completion", "text_completion"),
}


@blueprint.route("/models", methods=["GET"])
def models():
    """Every model of the library, with llama-server's `status` extension (loaded or not)."""
    return jsonify({"object": "list", "data": library_views.openai_models()})


@blueprint.route("/chat/completions", methods=["POST"])
def chat_completions():
    return _answer("chat", _validated("chat"))


@blueprint.route("/completions", methods=["POST"])
def completions():
    return _answer("completion", _validated("completion"))


def _validated(kind: str) -> tuple[OpenAICall, Model, object]:
    settings, body = app_state().settings, json_body()
    named = model_of(body)
    call = validate_openai(kind, body, settings.max_tokens, settings.max_tokens_ceiling, named.preset.sampling)
    return call, named, keep_alive_of(body)


def _answer(kind: str, validated: tuple[OpenAICall, Model, object]):
    call, named, keep_alive = validated
    shape, choice = SHAPES[kind], ChoiceBuilder(kind, call)
    generation = submit(call.request, NAMES, named, keep_alive)
    head = {
        "id": shape.id_prefix + uuid.uuid4().hex[:24],
        "created": int(time.time()),
        "model": named.name,
    }
    if call.request.stream:
        chunks = Chunks(shape, head, call.include_usage, choice)
        return Response(
            EventStream(generation, chunks.render, _sse_error), mimetype="text/event-stream", headers=SSE_HEADERS
        )
    deltas, done = collect_deltas(generation, client_gone_check(request.environ))
    for delta in deltas:
        choice.add(delta)
    return jsonify(
        {
            **head,
            "object": shape.object,
            "choices": [choice.whole(done.finish_reason)],
            "usage": done.usage,
            "timings": done.timings,
        }
    )


class Chunks:
    """The engine's events as OpenAI's streamed chunks, ending with `data: [DONE]`."""

    def __init__(self, shape: Shape, head: dict, include_usage: bool, choice: ChoiceBuilder):
        self.shape, self.head, self.include_usage, self.choice = shape, head, include_usage, choice

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
                delta = self.choice.delta(event)
                if delta is not None:
                    yield self._chunk([delta])
                continue
            # llama.cpp's server also sends its timings here; the chat page shows tokens/s from them.
            yield self._chunk([self.choice.last(event.finish_reason)], timings=event.timings)
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
            **({"categories": error["categories"]} if "categories" in error else {}),  # content_filter's
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
