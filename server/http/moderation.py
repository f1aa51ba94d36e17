"""Moderation on the web side: the hook every dialect's `submit` goes through, and POST /v1/moderations.

`install` builds the app's Moderation (server/safety/policy.py) over the library's guard
model, registers its metrics, and with MODERATION on starts loading the guard at once.
`moderate(req, submit)` is the one call the dialects' common `submit`
(server/http/state.py) makes: the input check beside the request's own prompt
evaluation, then the answer wrapped for the output checks; with MODERATION off and no
`X-Moderation` header it costs nothing. A flagged request's error takes each dialect's
shape through the dialects' own error hooks (OpenAI's keeps `code: content_filter` and the
`categories`).

/v1/moderations answers in OpenAI's shape, one result per input, each input checked as a
user's message: `flagged`, OpenAI's `categories` and `category_scores` (the Llama Guard
categories that correspond set them, with the guard's P(unsafe) as the score), and the
guard's own codes and names in `llama_guard_categories`.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from flask import Blueprint, Flask, current_app, jsonify, request

from server.engine.generation import Generation
from server.engine.request import Request
from server.errors import InvalidRequest, ServerError
from server.http.body import json_body
from server.http.state import app_state, model_of
from server.safety.guard import GuardFailed, LlamaGuard
from server.safety.metrics import SafetyMetrics
from server.safety.policy import HEADER, ContentFiltered, Moderation, ModerationUnavailable, unavailable
from server.safety.prompt import Turn
from server.safety.windows import Watched

KEY = "laptop_llama_moderation"
blueprint = Blueprint("moderation", __name__, url_prefix="/v1")

# OpenAI's moderation categories for each Llama Guard category (by name: the numbers differ
# between Llama Guard 2 and 3). Categories OpenAI has no word for map to none.
OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
TO_OPENAI = {
    "Violent Crimes": ("violence", "illicit/violent"),
    "Non-Violent Crimes": ("illicit",),
    "Sex Crimes": ("sexual",),
    "Child Exploitation": ("sexual/minors",),
    "Indiscriminate Weapons": ("illicit/violent",),
    "Hate": ("hate",),
    "Self-Harm": ("self-harm",),
    "Sexual Content": ("sexual",),
}
OPENAI_MODELS = (
    "omni-moderation-latest",
    "omni-moderation-2024-09-26",
    "text-moderation-latest",
    "text-moderation-stable",
)
MAX_INPUTS = 32


def install(app: Flask) -> None:
    state = app.extensions["laptop_llama"]
    settings = state.settings
    guard = LlamaGuard(settings, state.library) if settings.guard_model else None
    app.extensions[KEY] = Moderation(settings, guard, SafetyMetrics(state.metrics.registry))
    app.register_blueprint(blueprint)
    if guard is not None and settings.moderation != "off":  # the first request would wait for it
        try:
            state.library.preload(state.library.catalog.find(guard.model).name)
        except ServerError:
            pass  # not in the library: every check fails, as GUARD_FAILURE says, and logs why


def moderation() -> Moderation:
    return current_app.extensions[KEY]


def moderate(req: Request, submit: Callable[[Request], Generation]) -> Generation:
    """The request's input check beside its submission, and its answer under the output checks.

    The input check runs while the model evaluates the prompt (the two are decoding work in the
    engines' batch loops, the same loop when the guard is the same model), and nothing of the
    answer is read before the verdict: a flagged request's generation is cancelled unread."""
    policy = moderation()
    plan = policy.plan(request.headers.get(HEADER))
    if plan.input:
        screening = policy.pool.submit(policy.screen, req, plan)
        generation = submit(req)  # an error here (a bad field, an unknown model) is the answer
        try:
            refusal = screening.result()
        except BaseException:
            generation.cancel()
            raise
        if refusal is not None:
            generation.cancel()
            return refusal
    else:
        generation = submit(req)
    if not plan.output:
        return generation
    s = policy.settings
    check = policy.output_check(req)
    return Watched(generation, check, s.moderation_stream, s.moderation_window, s.moderation_overlap, policy.pool)


@blueprint.route("/moderations", methods=["POST"])
def moderations():
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(body) - {"input", "model"})
    if unknown:
        raise InvalidRequest(f"unknown field '{unknown[0]}'", unknown[0])
    texts = _inputs(body.get("input"))
    policy = _policy_for(body)
    names = policy.names()
    results = []
    for text in texts:
        try:
            verdict = policy.check([Turn("User", text)], "api")
        except GuardFailed as exc:  # under GUARD_FAILURE=closed
            raise unavailable(exc) from None
        results.append(_result(verdict.flagged, verdict.score, verdict.categories, names))
    guard = policy.guard
    return jsonify({"id": "modr-" + uuid.uuid4().hex[:24], "model": getattr(guard, "model", ""), "results": results})


def _inputs(value: Any) -> list[str]:
    """`input`: a string, a list of strings, or a list of parts (only text ones)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'input' must be a string or a non-empty list of strings or text parts", "input")
    if len(value) > MAX_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_INPUTS} items", "input")
    texts = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            item = item["text"]
        if not isinstance(item, str):
            where = f"input[{i}]"
            raise InvalidRequest(f"'{where}' must be a string or a text part; the guard reads text only", where)
        texts.append(item)
    return texts


def _policy_for(body: dict) -> Moderation:
    """The app's moderation, or one over the library model the body names as the guard."""
    policy = moderation()
    name = body.get("model")
    if name is None or name in OPENAI_MODELS or name == getattr(policy.guard, "model", None):
        if policy.guard is None:
            raise ModerationUnavailable("no guard model is set: start the server with GUARD_MODEL")
        return policy
    model = model_of(body)
    guard = LlamaGuard(policy.settings, app_state().library, model.name)
    return Moderation(policy.settings, guard, policy.metrics)


def _result(flagged: bool, score: float, codes: tuple[str, ...], names: dict[str, str]) -> dict:
    categories = dict.fromkeys(OPENAI_CATEGORIES, False)
    scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    for code in codes:
        for key in TO_OPENAI.get(names.get(code, ""), ()):
            categories[key], scores[key] = True, score
    return {
        "flagged": flagged,
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {key: ["text"] for key in OPENAI_CATEGORIES},
        "llama_guard_categories": [{"code": c, "name": names.get(c, c)} for c in codes],
        "llama_guard_score": score,
    }


__all__ = ["ContentFiltered", "install", "moderate", "moderations"]
