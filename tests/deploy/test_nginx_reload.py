"""deploy/nginx_reload.py through real nginx: once reload() returns, no request meets the old lists.

nginx keeps its old workers accepting for about 100 ms after a reload. The launcher marks a
replica ready only after reload() returns, so from then on every request must reach it; a
request answered from the old lists would be a "no replica is ready" 503 to a client that
was just told the cluster is ready.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import requests

from deploy import nginx_conf, nginx_reload
from tests.deploy.conftest import free_ports, nginx_running, stub_upstream
from tests.deploy.test_nginx_conf import Answers, SlowStream


class LongStream(SlowStream):
    """A stream of 20 events 0.2 s apart: an answer still running on an old worker during a reload."""

    EVENTS, PACE_S = 20, 0.2


@contextlib.contextmanager
def nginx_with_no_replica(nginx: str, run_dir: Path, replica: int):
    """nginx whose lists hold no ready replica yet; yields (process, port, write(ready ports))."""
    port = free_ports(1)

    def write(ready: list[int]) -> None:
        text = nginx_conf.render(f"127.0.0.1:{port}", run_dir, ready, [replica], 30, 4096)
        nginx_conf.write(run_dir / "nginx.conf", text)

    write([])
    with nginx_running(nginx, run_dir, port) as proc:
        yield proc, port, write


def test_after_reload_returns_every_request_reaches_the_new_replica(nginx, tmp_path):
    with stub_upstream(Answers) as replica:
        for trial in range(5):
            run_dir = tmp_path / str(trial)
            run_dir.mkdir()
            with nginx_with_no_replica(nginx, run_dir, replica) as (proc, port, write):
                write([replica])
                assert nginx_reload.reload(proc)
                statuses = [
                    requests.post(f"http://127.0.0.1:{port}/api/respond", json={}, timeout=10).status_code
                    for _ in range(30)
                ]
                assert statuses == [200] * 30, (trial, statuses)


def test_a_configuration_nginx_refuses_is_reported(nginx, tmp_path):
    with stub_upstream(Answers) as replica, nginx_with_no_replica(nginx, tmp_path, replica) as (proc, port, _):
        (tmp_path / "nginx.conf").write_text("this is not nginx configuration;\n")
        assert not nginx_reload.reload(proc, limit=1.0)
        # The old workers still serve the old lists.
        r = requests.post(f"http://127.0.0.1:{port}/api/respond", json={}, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["type"] == "no_replica"


def test_a_stream_on_an_old_worker_does_not_hold_the_reload_back(nginx, tmp_path):
    """The old worker keeps running to finish the stream, but it stops accepting at once: reload()
    returns then, and the stream still ends whole."""
    with stub_upstream(LongStream) as streaming, stub_upstream(Answers) as other:
        with nginx_with_no_replica(nginx, tmp_path, streaming) as (proc, port, write):
            write([streaming])
            assert nginx_reload.reload(proc)
            events: list[bytes] = []

            def listen() -> None:
                with requests.post(f"http://127.0.0.1:{port}/api/respond", json={}, stream=True, timeout=30) as r:
                    events.extend(line for line in r.iter_lines() if line.startswith(b"data: "))

            client = threading.Thread(target=listen)
            client.start()
            time.sleep(0.6)  # the stream has begun on the worker about to become old
            old = set(nginx_reload.workers(proc.pid))
            write([other])
            start = time.monotonic()
            assert nginx_reload.reload(proc)
            assert time.monotonic() - start < 2  # not the ~3.4 s the stream has left
            titles = nginx_reload.workers(proc.pid)
            assert any(titles.get(pid) == "nginx: worker process is shutting down" for pid in old), titles
            r = requests.post(f"http://127.0.0.1:{port}/api/respond", json={"q": 1}, timeout=10)
            assert r.status_code == 200 and "echo" in r.json()  # the new list: the other replica
            client.join(30)
    assert len(events) == 20
