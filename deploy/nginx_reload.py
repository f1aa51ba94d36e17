"""Reload nginx and return only once its new configuration is the one answering.

On SIGHUP nginx's master starts new workers, sleeps 100 ms, and only then tells the old
workers to stop accepting; until they do, a new connection may reach either generation. A
replica the launcher has just put in rotation is therefore not in rotation yet for every
request: a client told "ready" could still get the old list's answer (for the first replica,
"no replica is ready"). So the launcher waits until every worker it saw before the reload has
exited or is shutting down (it has closed its listening sockets) and a new one is running.
Linux only: the workers are found in /proc, as the launcher itself is.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

SERVING = "nginx: worker process"  # an old worker that stops accepting retitles itself "... is shutting down"


def workers(master: int) -> dict[int, str]:
    """The master's live children by pid, with the title nginx gave each (its /proc cmdline)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != master or fields[0] == "Z":
                continue
            found[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, ValueError, IndexError):  # gone while we looked
            continue
    return found


def reload(nginx: subprocess.Popen, limit: float = 10.0) -> bool:
    """SIGHUP nginx and wait until only new workers accept connections; False if that took
    longer than `limit` seconds (a configuration nginx refused keeps the old workers: see its
    error log) or nginx exited."""
    before = set(workers(nginx.pid))
    nginx.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and nginx.poll() is None:
        now = workers(nginx.pid)
        old_serving = [pid for pid in before if now.get(pid) == SERVING]
        if not old_serving and set(now) - before:
            return True
        time.sleep(0.02)
    return False
