"""Atomic outputs: write under OUT.partial in the same folder, fsync, rename.

A step killed half-way therefore never leaves a file at the output path that
looks complete; the next run finds only the stale .partial and replaces it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from conversion.errors import OutputExistsError

PARTIAL_SUFFIX = ".partial"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing output unless forced, saying how to proceed."""
    if out.exists() and not force:
        raise OutputExistsError(
            f"{out} already exists; not overwriting it. Pass --force to replace it, or choose another --out path."
        )


@contextlib.contextmanager
def atomic_output(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `out` only if the block succeeds."""
    out = Path(out)
    check_output(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(out)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    # Makes the rename itself durable; not every filesystem allows it.
    with contextlib.suppress(OSError):
        fsync_file(path)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"
