"""llama-server's router routes over the library: GET /models, POST /models/load, POST /models/unload.

Same shapes as llama-server's router mode: `{"object": "list", "data": [...]}` with a
`status` per model, and `{"success": true}` for a load or an unload. A load answers once
the model is loaded (a load that fails is a 503 with llama.cpp's reason); an unload
takes effect once the model is idle (what runs on it finishes).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from server.errors import InvalidRequest
from server.http.body import json_body
from server.http.fields import Limit, check_body
from server.http.ollama import models as views
from server.http.state import app_state, keep_alive_of, model_of, use

blueprint = Blueprint("models", __name__)
FIELDS = {"model": Limit(str, 1, 256, required=True), "keep_alive": Limit((str, int, float))}


@blueprint.route("/models", methods=["GET"])
def models():
    return jsonify({"object": "list", "data": views.router_models()})


@blueprint.route("/models/load", methods=["POST"])
def load():
    body = json_body()
    check_body(body, FIELDS)
    model = model_of(body, required=True)
    if app_state().library.status(model) == "loaded":
        raise InvalidRequest("model is already running", "model")
    use(model, keep_alive_of(body)).release()
    return jsonify({"success": True})


@blueprint.route("/models/unload", methods=["POST"])
def unload():
    body = json_body()
    check_body(body, {"model": FIELDS["model"]})
    model = model_of(body, required=True)
    if not app_state().library.unload(model.name):
        raise InvalidRequest("model is not running", "model")
    return jsonify({"success": True})
