"""deploy/nginx.conf through real nginx, in front of stand-in replicas (no model needed, fast).

The stand-ins do what a real replica does only now and then: answer 503 to everything,
or send a stream at a set pace. Checked: retries past a replica that answers 503 or refuses
the connection, a replica's own 503 passed through when every one answers it, nginx's own
answers in the server's JSON shape (no replica ready, body too large), streams passed on
as they come, and the settings carried into the file.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from deploy import nginx_conf
from tests.deploy.conftest import free_ports, nginx_running, stub_upstream

MAX_BODY = 4096


class Loading(http.server.BaseHTTPRequestHandler):
    """Answers everything like a replica still loading its model."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": {"type": "loading", "message": "the model is still loading"}}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "5")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Answers(Loading):
    """Answers 200 with the body it got, so the test sees the POST arrived whole."""

    def do_POST(self):
        got = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"echo": got.decode()}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class SlowStream(Loading):
    """Server-sent events, one every 0.3 s, without X-Accel-Buffering: nginx's own setting decides."""

    EVENTS, PACE_S = 4, 0.3

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        for i in range(self.EVENTS):
            self.wfile.write(f'data: {{"n": {i}}}\n\n'.encode())
            self.wfile.flush()
            time.sleep(self.PACE_S)


@contextlib.contextmanager
def nginx_on(nginx: str, tmp_path: Path, ready_ports: list[int], request_timeout: float = 30):
    """Real nginx with the rendered template; yields (base URL, access log path)."""
    port = free_ports(1)
    text = nginx_conf.render(
        f"127.0.0.1:{port}", tmp_path, ready_ports, ready_ports or [port + 1], request_timeout, MAX_BODY
    )
    nginx_conf.write(tmp_path / "nginx.conf", text)
    with nginx_running(nginx, tmp_path, port):
        yield f"http://127.0.0.1:{port}", tmp_path / "access.log"


def log_entries(path: Path) -> list[dict]:
    deadline = time.monotonic() + 2  # nginx writes the line once the request is finalized
    while time.monotonic() < deadline and not path.stat().st_size:
        time.sleep(0.05)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_render_fills_every_field_from_the_settings(tmp_path):
    text = nginx_conf.render("0.0.0.0:9000", tmp_path, [9001, 9002], [9001, 9002], 120.5, 65536)
    assert not re.search(r"@[A-Z_]+@", text)  # no field left unfilled
    assert "listen 0.0.0.0:9000;" in text
    assert "client_max_body_size 65536;" in text and "request body is larger than 65536 bytes" in text
    assert "proxy_read_timeout 131s;" in text  # REQUEST_TIMEOUT rounded up, plus the margin
    assert "proxy_next_upstream error timeout http_503 non_idempotent;" in text
    assert text.count("server 127.0.0.1:9002 max_fails=2 fail_timeout=5s;") == 2  # both upstream lists


def test_a_field_the_launcher_does_not_know_is_an_error(tmp_path, monkeypatch):
    template = tmp_path / "nginx.conf"
    template.write_text("listen @LISTEN@; worker_rlimit_nofile @NOFILE@;")
    monkeypatch.setattr(nginx_conf, "TEMPLATE", template)
    with pytest.raises(ValueError, match="@NOFILE@"):
        nginx_conf.render("127.0.0.1:1", tmp_path, [], [2], 10, 1024)


def test_nginx_accepts_the_file_with_and_without_ready_replicas(nginx, tmp_path):
    for ready in ([], [9001], [9001, 9002]):
        nginx_conf.write(
            tmp_path / "nginx.conf", nginx_conf.render("127.0.0.1:9000", tmp_path, ready, [9001, 9002], 300, 1 << 20)
        )
        test = subprocess.run(
            [
                nginx,
                "-t",
                "-p",
                str(tmp_path),
                "-c",
                str(tmp_path / "nginx.conf"),
                "-e",
                str(tmp_path / "nginx-error.log"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert test.returncode == 0, test.stderr


def test_a_replica_answering_503_or_refusing_is_skipped(nginx, tmp_path):
    closed = free_ports(1)
    with (
        stub_upstream(Loading) as loading,
        stub_upstream(Answers) as answers,
        nginx_on(nginx, tmp_path, [loading, closed, answers]) as (base, access_log),
    ):
        for i in range(6):  # least_conn takes the three in turn: each one is tried first twice
            r = requests.post(f"{base}/api/respond", json={"query": f"q{i}"}, timeout=10)
            assert r.status_code == 200 and json.loads(r.json()["echo"]) == {"query": f"q{i}"}
    attempts = [e["upstream"] for e in log_entries(access_log)]
    assert any(a.startswith(f"127.0.0.1:{loading},") for a in attempts), attempts  # 503, then retried
    assert any(a.startswith(f"127.0.0.1:{closed},") for a in attempts), attempts  # refused, then retried


def test_when_every_replica_answers_503_the_client_gets_the_replicas_answer(nginx, tmp_path):
    with stub_upstream(Loading) as a, stub_upstream(Loading) as b, nginx_on(nginx, tmp_path, [a, b]) as (base, _):
        r = requests.post(f"{base}/api/respond", json={"query": "q"}, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["type"] == "loading" and r.headers["Retry-After"] == "5"


def test_no_replica_ready_is_a_json_503_from_nginx(nginx, tmp_path):
    with nginx_on(nginx, tmp_path, []) as (base, _):
        r = requests.post(f"{base}/api/respond", json={"query": "q"}, timeout=10)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"
    assert r.json()["error"]["type"] == "no_replica"


def test_a_body_over_max_body_bytes_is_a_json_413_from_nginx(nginx, tmp_path):
    with stub_upstream(Answers) as answers, nginx_on(nginx, tmp_path, [answers]) as (base, _):
        big = requests.post(
            f"{base}/api/respond", data=b"x" * (MAX_BODY + 1), timeout=10, headers={"Content-Type": "application/json"}
        )
        fits = requests.post(f"{base}/api/respond", json={"query": "x" * (MAX_BODY - 20)}, timeout=10)
    assert big.status_code == 413 and big.json()["error"] == {
        "type": "body_too_large",
        "message": f"request body is larger than {MAX_BODY} bytes",
    }
    assert fits.status_code == 200


def test_a_stream_is_passed_on_as_it_comes(nginx, tmp_path):
    with stub_upstream(SlowStream) as slow, nginx_on(nginx, tmp_path, [slow]) as (base, _):
        start = time.monotonic()
        with requests.post(f"{base}/api/respond", json={"stream": True}, stream=True, timeout=10) as r:
            arrivals = [time.monotonic() - start for line in r.iter_lines() if line.startswith(b"data: ")]
    assert len(arrivals) == 4
    # Sent 0.3 s apart; held back in a buffer they would arrive together at the end.
    assert arrivals[-1] - arrivals[0] > 0.6, arrivals
