"""A bench stopped with `kill` (SIGTERM) stops the servers it started, as Ctrl-C does."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_sigterm_runs_a_bench_s_cleanup(tmp_path):
    cleaned = tmp_path / "servers-stopped"
    script = f"""
import sys, time
sys.path.insert(0, {str(BENCH)!r})
from _targets import stop_on_sigterm
stop_on_sigterm()
try:
    print("running", flush=True)
    time.sleep(60)
finally:  # where a bench stops the servers it started
    open({str(cleaned)!r}, "w").close()
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert cleaned.exists()
