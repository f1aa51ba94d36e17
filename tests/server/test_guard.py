"""Closed to web pages and strangers: Host, CORS, content type, API key and security headers.

The rules (server/http/guard.py) through the Flask test client over the real Gemma
engine, then the same promises over real sockets against real gunicorn (API key and
one CORS origin set).
"""

from __future__ import annotations

import pytest
import requests

from server.http.guard import host_allowed
from server.settings import Settings, SettingsError
from tests.server.conftest import make_client
from tests.server.gunicorn_util import KEYED, ORIGIN

QUESTION = {"query": "hi", "max_tokens": 1, "temperature": 0}
KEY = {"Authorization": "Bearer s3cret"}


@pytest.mark.parametrize(
    "host, ok",
    [
        ("localhost", True),
        ("LOCALHOST:8000", True),
        ("127.0.0.1:8000", True),
        ("[::1]:8000", True),
        ("10.1.2.3:8000", True),  # an IP address cannot be rebound to us by someone's DNS
        ("llm.internal:8000", True),  # in ALLOWED_HOSTS
        ("box.lan", True),  # the bound HOST
        ("evil.example:8000", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io:8000", False),
        ("llm.internal.evil.example", False),
        ("", False),
    ],
)
def test_host_rule(host, ok):
    assert host_allowed(host, "box.lan", ("llm.internal",)) is ok


@pytest.mark.parametrize("path", ["/api/health", "/metrics", "/", "/static/app.js", "/v1/models"])
def test_a_foreign_host_is_403_on_every_route(gemma_engine, path):
    client = make_client(gemma_engine)
    response = client.get(path, headers={"Host": "rebound.example:8000"})
    assert response.status_code == 403
    assert "LLAMA_SERVER_ALLOWED_HOSTS" in response.json["error"]["message"]
    assert client.get(path, headers={"Host": "localhost:8000"}).status_code == 200


def test_allowed_hosts_lets_a_proxys_name_through(gemma_engine):
    client = make_client(gemma_engine, allowed_hosts=("llm.example.com",))
    assert client.post("/api/respond", json=QUESTION, headers={"Host": "llm.example.com"}).status_code == 200
    assert client.post("/api/respond", json=QUESTION, headers={"Host": "other.example.com"}).status_code == 403


@pytest.mark.parametrize("value", ["http://x.example", "x.example:80", "x/y"])
def test_allowed_hosts_are_host_names(value):
    with pytest.raises(SettingsError, match="ALLOWED_HOSTS"):
        Settings.from_env({"LLAMA_SERVER_ALLOWED_HOSTS": value})


@pytest.mark.parametrize("value", ["*", "app.example.com", "https://app.example.com/"])
def test_allowed_origins_are_origins(value):
    with pytest.raises(SettingsError, match="ALLOWED_ORIGINS"):
        Settings.from_env({"LLAMA_SERVER_ALLOWED_ORIGINS": value})


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
)
@pytest.mark.parametrize("path", ["/api/respond", "/v1/chat/completions", "/v1/completions", "/api/chat", "/tokenize"])
def test_post_bodies_must_be_json(gemma_engine, path, content_type):
    """What a page elsewhere can send without a CORS preflight is refused before it is read."""
    client = make_client(gemma_engine)
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(path, data='{"query": "hi", "prompt": "hi"}', headers=headers)
    assert response.status_code == 415
    error = response.json["error"]
    assert "application/json" in (error if isinstance(error, str) else error["message"])  # Ollama's: a string


def test_json_with_a_charset_is_json(gemma_engine):
    client = make_client(gemma_engine)
    response = client.post(
        "/api/respond", data='{"query": "hi", "max_tokens": 1}', content_type="application/json; charset=utf-8"
    )
    assert response.status_code == 200


def test_no_cors_headers_unless_the_origin_is_allowed(gemma_engine):
    for client, origin in (
        (make_client(gemma_engine), "https://app.example.com"),
        (make_client(gemma_engine, allowed_origins=("https://app.example.com",)), "https://evil.example"),
    ):
        answer = client.post("/api/respond", json=QUESTION, headers={"Origin": origin})
        preflight = client.options(
            "/v1/chat/completions",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        for response in (answer, preflight):
            assert not [h for h in response.headers.keys() if h.lower().startswith("access-control-allow")]


def test_an_allowed_origin_gets_cors_and_its_preflight_needs_no_key(gemma_engine):
    origin = "https://app.example.com"
    client = make_client(gemma_engine, allowed_origins=(origin,), api_key="s3cret")
    preflight = client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= set(
        preflight.headers["Access-Control-Allow-Headers"].lower().split(", ")
    )
    answer = client.post("/api/respond", json=QUESTION, headers={"Origin": origin, **KEY})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in answer.headers.get_all("Vary")
    refused = client.post("/api/respond", json=QUESTION, headers={"Origin": origin})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == origin  # readable


KEYED_ROUTES = [
    ("get", "/metrics", None),
    ("get", "/v1/models", None),
    ("get", "/api/tags", None),
    ("get", "/api/ps", None),
    ("post", "/api/respond", {"query": "hi", "max_tokens": 1}),
    ("post", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    ("post", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
    ("post", "/api/generate", {"model": "gemma-3-270m-q4_k_m", "prompt": "hi", "stream": False}),
    ("post", "/api/show", {"model": "gemma-3-270m-q4_k_m"}),
    ("post", "/tokenize", {"content": "hi"}),
    ("post", "/detokenize", {"tokens": [1]}),
]


@pytest.mark.parametrize("method, path, body", KEYED_ROUTES, ids=[p for _, p, _ in KEYED_ROUTES])
def test_with_a_key_every_route_but_the_probes_and_the_page_needs_it(gemma_engine, method, path, body):
    client = make_client(gemma_engine, api_key="s3cret")
    refused = getattr(client, method)(path, json=body)
    assert refused.status_code == 401 and refused.json["error"]
    assert getattr(client, method)(path, json=body, headers=KEY).status_code == 200


def test_the_liveness_probes_stay_open(gemma_engine):
    client = make_client(gemma_engine, api_key="s3cret")
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/version").json == {"version": "0.32.15"}  # Ollama's clients ask for it first


def test_the_page_and_its_files_stay_public(gemma_engine):
    client = make_client(gemma_engine, api_key="s3cret")
    for path in ("/", "/static/index.html", "/static/app.js", "/static/style.css"):
        assert client.get(path).status_code == 200


def test_health_without_the_key_says_only_whether_the_server_is_up(gemma_engine, gemma_gguf):
    client = make_client(gemma_engine, api_key="s3cret")
    bare = client.get("/api/health")
    assert bare.status_code == 200 and bare.json == {"status": "ok"}
    full = client.get("/api/health", headers=KEY).json
    assert full["status"] == "ok" and full["file"] == str(gemma_gguf) and full["model"]
    wrong = client.get("/api/health", headers={"Authorization": "Bearer nope"})
    assert wrong.json == {"status": "ok"}
    open_client = make_client(gemma_engine)  # no key set: health tells all, as before
    assert open_client.get("/api/health").json["file"] == str(gemma_gguf)


@pytest.mark.parametrize("path", ["/", "/static/index.html", "/static/app.js", "/api/health", "/nowhere", "/metrics"])
def test_every_response_has_nosniff_and_a_no_framing_csp(gemma_engine, path):
    response = make_client(gemma_engine).get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp


def test_errors_and_streams_carry_the_headers_too(gemma_engine):
    client = make_client(gemma_engine, api_key="s3cret")
    for response in (
        client.post("/api/respond", json=QUESTION),  # 401
        client.post("/api/respond", data="x", content_type="text/plain", headers=KEY),  # 415
        client.get("/", headers={"Host": "evil.example"}),  # 403
        client.post("/api/respond", json={**QUESTION, "stream": True}, headers=KEY),  # 200, event stream
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff", response.status


# --- the same over real sockets, real gunicorn (API key and ORIGIN set) -----------------------------------


def test_real_server_refuses_a_rebound_host(keyed_server):
    base = keyed_server[1]
    response = requests.get(f"{base}/api/health", headers={"Host": "attacker.example"}, timeout=10)
    assert response.status_code == 403 and response.json()["error"]["type"] == "forbidden"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    port = base.rsplit(":", 1)[1]
    assert requests.get(f"{base}/api/health", headers={"Host": f"localhost:{port}"}, timeout=10).status_code == 200


def test_real_server_health_and_metrics_with_and_without_the_key(keyed_server):
    base = keyed_server[1]
    assert requests.get(f"{base}/api/health", timeout=10).json() == {"status": "ok"}
    assert "file" in requests.get(f"{base}/api/health", headers=KEYED, timeout=10).json()
    assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
    assert requests.get(f"{base}/metrics", headers=KEYED, timeout=10).status_code == 200


def test_real_server_cors_for_its_origin_only(keyed_server):
    base = keyed_server[1]
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    preflight = requests.options(f"{base}/v1/chat/completions", headers={"Origin": ORIGIN, **ask}, timeout=10)
    assert preflight.status_code == 204 and preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    other = requests.options(
        f"{base}/v1/chat/completions", headers={"Origin": "https://evil.example", **ask}, timeout=10
    )
    assert "Access-Control-Allow-Origin" not in other.headers
    plain = requests.post(
        f"{base}/v1/completions", data='{"prompt": "hi"}', headers={**KEYED, "Content-Type": "text/plain"}, timeout=10
    )
    assert plain.status_code == 415


def test_real_server_page_is_unframeable(keyed_server):
    base = keyed_server[1]
    for path in ("/", "/static/index.html", "/static/app.js"):
        response = requests.get(f"{base}{path}", timeout=10)
        assert response.status_code == 200
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
