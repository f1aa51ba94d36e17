"""Fill deploy/nginx.conf for one cluster: listen address, run directory, limits, ready replicas.

The upstream lists name only the replicas that are ready. nginx refuses an upstream
without servers, so while none is ready the list holds one replica marked `down`: nginx
then answers every request itself (503, "no replica is ready") instead of forwarding it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

TEMPLATE = Path(__file__).with_name("nginx.conf")
# Passive health: a replica that fails this often within FAIL_TIMEOUT gets no traffic for FAIL_TIMEOUT.
MAX_FAILS, FAIL_TIMEOUT = 2, "5s"
# nginx waits this much longer than REQUEST_TIMEOUT, so the replica's own 504 gets through first.
PROXY_MARGIN_S = 10
TEMP_DIRS = ("body", "proxy", "fastcgi", "uwsgi", "scgi")


def server_lines(ready_ports: list[int], all_ports: list[int]) -> str:
    """The `server` lines of an upstream block: the ready replicas, or one placeholder marked down."""
    if not ready_ports:
        return f"        server 127.0.0.1:{all_ports[0]} down;  # no replica is ready yet"
    return "\n".join(
        f"        server 127.0.0.1:{port} max_fails={MAX_FAILS} fail_timeout={FAIL_TIMEOUT};" for port in ready_ports
    )


def render(
    listen: str,
    run_dir: Path,
    ready_ports: list[int],
    all_ports: list[int],
    request_timeout: float,
    max_body_bytes: int,
) -> str:
    """The nginx configuration text; ValueError if the template has a field this does not fill."""
    timeout = math.ceil(request_timeout)
    fields = {
        "LISTEN": listen,
        "RUN_DIR": str(run_dir),
        "SERVERS": server_lines(ready_ports, all_ports),
        "REQUEST_TIMEOUT": str(timeout),
        "PROXY_TIMEOUT": str(timeout + PROXY_MARGIN_S),
        "MAX_BODY_BYTES": str(max_body_bytes),
    }
    text = re.sub(r"@([A-Z_]+)@", lambda m: fields.get(m.group(1), m.group(0)), TEMPLATE.read_text())
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise ValueError(f"{TEMPLATE.name}: no value for {', '.join(left)}")
    return text


def write(path: Path, text: str) -> None:
    """Write under a temporary name, then rename: a reload never reads half a file."""
    for name in TEMP_DIRS:
        (path.parent / "tmp" / name).mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
