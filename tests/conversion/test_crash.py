"""A conversion killed half-way (SIGKILL, no cleanup possible) leaves nothing at the output path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gguf

from conversion.cli import main

ROOT = Path(__file__).resolve().parents[2]

# The real CLI in a child process that SIGKILLs itself once half of the tensors
# are on disk: a deterministic "half-way" that polling from outside cannot hit
# on a conversion this small.
KILL_HALF_WAY = """
import os, signal, sys
import conversion.converter as c
real, seen = c.read_chunks, []
def read_chunks(plan):
    seen.append(plan.name)
    if len(seen) > 10:
        os.kill(os.getpid(), signal.SIGKILL)
    yield from real(plan)
c.read_chunks = read_chunks
from conversion.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_conversion_leaves_no_output(tmp_path, tiny_llama_checkpoint):
    out = tmp_path / "model.gguf"
    child = subprocess.run(
        [sys.executable, "-c", KILL_HALF_WAY, "convert", str(tiny_llama_checkpoint), "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL
    partial = out.with_name(out.name + ".partial")
    assert partial.is_file() and partial.stat().st_size > 0  # it really was writing
    assert not out.exists()

    assert main(["convert", str(tiny_llama_checkpoint), "--out", str(out)]) == 0  # a rerun recovers
    assert not partial.exists()
    assert len(gguf.GGUFReader(out).tensors) == 21


# The real CLI in a child process that stops itself (SIGSTOP) once half of the tensors are
# written, holding its lock on OUT: a second run can then be started while the first is
# certainly half-way, and the first resumed (SIGCONT) afterwards.
PAUSE_HALF_WAY = KILL_HALF_WAY.replace("signal.SIGKILL", "signal.SIGSTOP").replace("> 10", "== 11")


def wait_stopped(pid: int, limit_s: float = 120) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state in ("T", "t"):
            return
        assert state != "Z", "the first run exited before it was half-way"
        time.sleep(0.01)
    raise AssertionError("the first run never reached half-way")


def test_a_second_run_for_the_same_output_refuses_at_once_and_the_first_finishes(tmp_path, tiny_llama_checkpoint):
    out = tmp_path / "model.gguf"
    command = ["convert", str(tiny_llama_checkpoint), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", PAUSE_HALF_WAY, *command], cwd=ROOT, env=env)
    try:
        wait_stopped(first.pid)
        lock = out.with_name(out.name + ".lock")
        assert lock.exists() and out.with_name(out.name + ".partial").stat().st_size > 0

        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "conversion", *command], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 5 and "another run is writing" in second.stderr and str(out) in second.stderr
        assert time.monotonic() - started < 30  # refused at once: no conversion work was done
        assert not out.exists() and out.with_name(out.name + ".partial").stat().st_size > 0  # untouched
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(120) == 0
    assert len(gguf.GGUFReader(out).tensors) == 21  # the first run's output is whole
    assert not lock.exists() and not out.with_name(out.name + ".partial").exists()
