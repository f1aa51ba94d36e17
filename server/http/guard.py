"""Who may talk to the server, and what every response says about itself: one pair of hooks.

`install(app)` registers a before-request hook that runs ahead of every route (those of
dialects added later too) and an after-request hook on every response, errors included:

- Host: a request must be addressed to an IP address, `localhost`, the bound HOST or a
  name in ALLOWED_HOSTS, else 403. A web page can point its own domain at 127.0.0.1
  (DNS rebinding) and then call us "same-origin"; its requests still carry its domain
  as Host. An IP address as Host cannot be rebound, so it is always accepted.
- CORS: headers only for an Origin listed in ALLOWED_ORIGINS; a preflight (OPTIONS with
  Access-Control-Request-Method) from one is answered here, before the key is asked for
  (browsers send no credentials on preflights).
- API key: with API_KEY set, every route needs it except the liveness probes
  (/api/health, which then says only whether the server is up, and Ollama's /api/version)
  and the chat page with its static files (the page asks for the key).
- Content type: POST bodies must be declared application/json (415 otherwise), so a
  page elsewhere cannot send one as a "simple" request that skips the CORS preflight.
- Every response: X-Content-Type-Options: nosniff, and a Content-Security-Policy that
  lets only our own files run and forbids framing (frame-ancestors 'none').
"""

from __future__ import annotations

import ipaddress

from flask import Flask, Response, request

from server.errors import Forbidden, UnsupportedMediaType
from server.http.state import app_state, authorize

# Routes open without the API key: the liveness probes (ours, and the version Ollama's clients
# ask for first) and the chat page with its files.
PUBLIC = {"ops.health", "ollama.version", "ops.index", "static"}
LOCAL_NAMES = {"localhost"}
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type",
    "Access-Control-Max-Age": "600",
}


def install(app: Flask) -> None:
    app.before_request(_before)
    app.after_request(_after)


def _before() -> Response | None:
    settings = app_state().settings
    if not host_allowed(request.host, settings.host, settings.allowed_hosts):
        raise Forbidden(
            f"this server does not answer to the host name {request.host!r}: "
            "add it to LLAMA_SERVER_ALLOWED_HOSTS to allow it"
        )
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if _allowed_origin() is not None:
            return Response(status=204, headers=PREFLIGHT)
        return None  # not ours to allow: the usual OPTIONS answer, without CORS headers
    if request.routing_exception is not None:
        return None  # 404 / 405 follow, as JSON
    if request.endpoint not in PUBLIC:
        authorize(settings.api_key)
    if request.method in BODY_METHODS and request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"the body must be sent as Content-Type: application/json (got {request.mimetype or 'none'!r})"
        )
    return None


def _after(response: Response) -> Response:
    headers = response.headers
    headers["X-Content-Type-Options"] = "nosniff"
    headers.setdefault("Content-Security-Policy", CSP)
    origin = _allowed_origin()
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "Retry-After"
    if app_state().settings.allowed_origins:
        headers.add("Vary", "Origin")  # the answer differs by Origin: caches must keep them apart
    return response


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    if origin and origin.lower() in app_state().settings.allowed_origins:
        return origin
    return None


def host_allowed(host: str, bound: str, allowed: tuple[str, ...]) -> bool:
    """Whether the Host header `host` ("name:port", "[v6]:port" or bare) names this server."""
    name = host.lower()
    if name.startswith("["):  # [IPv6]:port
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name in LOCAL_NAMES or name == bound.lower() or name in allowed
