"""A conversion killed half-way (SIGKILL, no cleanup possible) leaves nothing at the output path."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
