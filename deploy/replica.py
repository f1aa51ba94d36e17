"""One replica of the server: a `python -m server` process on a loopback port, and its health.

Each replica runs in its own session (process group), so a Ctrl-C in the terminal reaches
only the launcher, which then drains the replicas with SIGTERM; and so the whole replica
(gunicorn's master and its worker) can be killed at once if it does not stop in time.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
# A replica that stayed up this long starts from the shortest back-off again when it dies.
STABLE_S = 60.0
MAX_BACKOFF_S = 30.0


def _die_with_launcher() -> None:
    """In the child before exec: get SIGTERM if the launcher dies, so no replica outlives it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the launcher's own shutdown still stops it
        pass


def start_process(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start `command` in a new session with its output appended to `log_path`.

    preexec_fn is safe here: the launcher runs a single thread."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_launcher,
        )  # noqa: PLW1509


def health_ok(port: int, timeout: float = 2.0) -> bool | None:
    """True when /api/health answers 200, False for another answer or a refused connection,
    None when it did not answer in time (busy, or wedged: the caller decides after a few)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=timeout) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False  # 503 while the model loads, or when it failed to load
    except (TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return None if isinstance(reason, TimeoutError) else False


@dataclass
class Replica:
    index: int
    port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0  # wall-clock times, for the state file
    ready_at: float = 0.0
    next_start: float = 0.0  # monotonic: when a dead replica may start again
    backoff: float = 1.0
    slow_probes: int = 0

    def start(self) -> None:
        command = [sys.executable, "-m", "server"]
        self.proc = start_process(command, {**self.env, "LLAMA_SERVER_PORT": str(self.port)}, self.log_path)
        self.started_at, self.ready, self.slow_probes = time.time(), False, 0

    def exited(self) -> int | None:
        """The exit status once the process has ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def check(self) -> bool:
        """Probe /api/health; return True if the replica's readiness changed."""
        answer = health_ok(self.port)
        self.slow_probes = self.slow_probes + 1 if answer is None else 0
        ready = answer is True or (answer is None and self.ready and self.slow_probes < 3)
        if ready and not self.ready:
            self.ready_at = time.time()
        changed, self.ready = ready != self.ready, ready
        return changed

    def died(self, now: float) -> None:
        """Forget an exited process; it may start again after a back-off that doubles while it keeps
        dying and is reset by a stable run."""
        if time.time() - self.started_at > STABLE_S:
            self.backoff = 1.0
        self.proc, self.ready, self.next_start = None, False, now + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
        self.restarts += 1

    def signal(self, sig: int) -> None:
        """Send `sig` to gunicorn's master (SIGTERM: it stops accepting and lets answers finish)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL everything left in the replica's session (its worker too)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def state(self) -> dict:
        return {
            "index": self.index,
            "port": self.port,
            "pid": self.proc.pid if self.proc else None,
            "ready": self.ready,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "ready_at": self.ready_at if self.ready else None,
            "log": str(self.log_path),
        }
