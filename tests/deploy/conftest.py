"""Fixtures for the deployment tests: Debian's nginx, free loopback ports, a stand-in upstream.

Without nginx the tests that need it are skipped on a developer's machine, but fail where
CI is set: there .ci/run installs it, so its absence is a broken set-up, not a pass.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

NGINX = Path("/usr/sbin/nginx")


@pytest.fixture(scope="session")
def nginx() -> str:
    if not NGINX.exists():
        message = "needs Debian's nginx at /usr/sbin/nginx (apt-get install nginx, or make deploy-tools as root)"
        if os.environ.get("CI"):
            pytest.fail("CI is set but " + message)
        pytest.skip(message)
    return str(NGINX)


def free_ports(count: int) -> int:
    """A port P such that P..P+count-1 are all free on loopback now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


def wait_listening(port: int, proc: subprocess.Popen, log: Path, limit: float = 10) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text() if log.exists() else "exited"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listening on {port} after {limit} s")


@contextlib.contextmanager
def stub_upstream(handler: type[http.server.BaseHTTPRequestHandler]):
    """A stand-in replica on a free loopback port, for what a real one cannot do on demand
    (answer 503 every time, or stream at a pace the test sets). Yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def nginx_running(nginx: str, run_dir: Path, port: int):
    """Debian's nginx on run_dir/nginx.conf (the caller writes it), once it listens on `port`;
    yields the process and stops it gracefully (SIGQUIT) afterwards."""
    command = [nginx, "-p", str(run_dir), "-c", str(run_dir / "nginx.conf"), "-e", str(run_dir / "nginx-error.log")]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        wait_listening(port, proc, run_dir / "nginx-error.log")
        yield proc
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(10)
