"""llama-server's POST /tokenize and POST /detokenize, over the engine's vocabulary.

/tokenize {"content", "add_special"?, "with_pieces"?} -> {"tokens": [id, ...]}, or with
pieces [{"id", "piece"}, ...] where a piece that is not whole UTF-8 is given as its byte
values. Special tokens in the content are parsed, as in a raw prompt, so with
"add_special": true the count is the `usage.prompt_tokens` of the same text sent as a
raw prompt (/v1/completions). /detokenize {"tokens"} -> {"content"}. Both take an optional
`model` (the default model's vocabulary otherwise), as llama-server's router routes them.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from server.http.body import json_body
from server.http.fields import LIMITS, Limit, check, check_body
from server.http.state import model_of, use

blueprint = Blueprint("tokens", __name__)

FIELDS = {
    "tokenize": {
        "content": Limit(str, required=True),
        "add_special": Limit(bool),
        "with_pieces": Limit(bool),
        "model": LIMITS["model"],
    },
    # A token list as long as the largest context anyone runs; the body limit caps it too.
    "detokenize": {"tokens": Limit(list, 0, 131_072, required=True), "model": LIMITS["model"]},
}


def _body(kind: str) -> dict:
    body = json_body()
    check_body(body, FIELDS[kind])
    return body


@blueprint.route("/tokenize", methods=["POST"])
def tokenize():
    body = _body("tokenize")
    with use(model_of(body)) as lease:  # the model's vocabulary: it loads if it is not loaded
        engine = lease.engine
        tokens = engine.tokenize(body["content"], add_special=body.get("add_special") is True)
        if body.get("with_pieces") is not True:
            return jsonify({"tokens": tokens})
        pieces = engine.pieces(tokens)
    return jsonify({"tokens": [{"id": t, "piece": _piece(p)} for t, p in zip(tokens, pieces)]})


@blueprint.route("/detokenize", methods=["POST"])
def detokenize():
    body = _body("detokenize")
    for i, token in enumerate(body["tokens"]):
        check(f"tokens[{i}]", token, Limit(int))
    with use(model_of(body)) as lease:
        return jsonify({"content": lease.engine.detokenize(body["tokens"])})


def _piece(raw: bytes) -> str | list[int]:
    """A string when the bytes are whole UTF-8, else the byte values (as llama-server does)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)
