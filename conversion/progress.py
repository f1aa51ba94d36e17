"""Progress of the long steps of `make quantize` (download, convert, quantize) for the person waiting.

On a terminal, tqdm's bar redrawn in place. Anywhere else (a log file, CI, a container's output) a
redrawn bar would pile up as one endless line of carriage returns, so each redraw becomes a plain
line of its own, at most every LINE_SECONDS.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

from tqdm import tqdm

LINE_SECONDS = 15
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cursor moves between stacked bars


class _Lines:
    """A file for tqdm: each redraw ("\\r" + the bar) is written as one line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write(self, text: str) -> None:
        for part in _ESCAPES.sub("", text).replace("\r", "\n").split("\n"):
            if part.strip():
                self.out.write(part.rstrip() + "\n")

    def flush(self) -> None:
        self.out.flush()


class LineTqdm(tqdm):
    """tqdm writing plain lines (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.update(file=_Lines(sys.stderr), mininterval=LINE_SECONDS, ascii=True, ncols=100, dynamic_ncols=False)
        super().__init__(*args, **kwargs)


def bar_class() -> type[tqdm]:
    """tqdm itself on a terminal, LineTqdm elsewhere."""
    return tqdm if sys.stderr.isatty() else LineTqdm
