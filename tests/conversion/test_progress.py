"""`make quantize`'s progress in a log: plain lines, never a bar redrawn with carriage returns.

Under pytest stderr is captured, not a terminal, as in a log file or CI: the convert and quantize
steps (conversion/progress.py) must write each redraw as a line of its own.
"""

from __future__ import annotations

import sys

from conversion.cli import main
from conversion.progress import LineTqdm


def test_not_on_a_terminal_progress_is_plain_lines(tmp_path, tiny_llama_checkpoint, capsys):
    assert not sys.stderr.isatty()
    f16, q4 = tmp_path / "tiny.f16.gguf", tmp_path / "tiny.Q4_0.gguf"
    assert main(["convert", str(tiny_llama_checkpoint), "--out", str(f16)]) == 0
    assert main(["quantize", str(f16), "--out", str(q4), "--type", "Q4_0", "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err, repr(err[-500:])
    lines = err.splitlines()
    assert any(line.startswith("convert: 100%|") for line in lines), lines
    assert any(line.startswith("quantize Q4_0: ") for line in lines), lines


def test_each_redraw_is_one_line(capsys):
    with LineTqdm(total=4, desc="step") as bar:
        for _ in range(4):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("step:   0%|") and lines[-1].startswith("step: 100%|") and "4/4" in lines[-1]
