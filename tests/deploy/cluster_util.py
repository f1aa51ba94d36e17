"""`python -m deploy.cluster` as `make cluster` runs it, for the end-to-end tests.

`run_cluster` starts the launcher with a run directory the test can read (state.json, the
nginx access log), waits until every replica is ready and nginx answers, and stops it
afterwards (SIGTERM, as a terminal's Ctrl-C or a service manager would; SIGKILL as a last
resort, which also takes the replicas down with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ClusterRun:
    proc: subprocess.Popen
    base: str
    run_dir: Path

    def state(self) -> dict:
        return json.loads((self.run_dir / "state.json").read_text())

    def access_log(self) -> list[dict]:
        path = self.run_dir / "access.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def log_text(self) -> str:
        parts = [(self.run_dir / "launcher.log").read_text()]
        parts += [p.read_text()[-1500:] for p in sorted(self.run_dir.glob("replica-*.log"))]
        return "\n".join(parts)

    def wait_ready(self, limit: float = 120, restarts: int = 0) -> dict:
        """Wait until every replica is ready (and has restarted `restarts` times in all); return the state."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                state = self.state()
                if (
                    all(r["ready"] for r in state["replicas"])
                    and sum(r["restarts"] for r in state["replicas"]) >= restarts
                ):
                    return state
            time.sleep(0.2)
        pytest.fail(f"replicas not ready after {limit} s:\n{self.log_text()}")


@contextlib.contextmanager
def run_cluster(model: Path, run_dir: Path, port: int, replicas: int = 2, **settings: str):
    """Yield a ClusterRun with every replica ready; `settings` are LLAMA_SERVER_* values."""
    env = {**os.environ, **settings, "LLAMA_SERVER_MODEL": str(model)}
    command = [
        sys.executable,
        "-m",
        "deploy.cluster",
        "--replicas",
        str(replicas),
        "--port",
        str(port),
        "--run-dir",
        str(run_dir),
    ]
    with open(run_dir / "launcher.log", "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    run = ClusterRun(proc, f"http://127.0.0.1:{port}", run_dir)
    try:
        run.wait_ready()
        deadline = time.monotonic() + 10  # nginx has reloaded with both replicas in its lists
        while requests.get(f"{run.base}/api/health", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, run.log_text()
            time.sleep(0.1)
        yield run
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()  # the replicas get SIGTERM from the kernel when the launcher dies
                proc.wait()
