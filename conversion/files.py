"""Atomic outputs: write under OUT.partial in the same folder, fsync, rename; one writer at a time.

A step killed half-way therefore never leaves a file at the output path that
looks complete; the next run finds only the stale .partial and replaces it.
While a run writes OUT it holds an exclusive lock on OUT.lock (flock: the kernel
drops it when the process dies, so a killed run never leaves a stale lock), and
a second run for the same OUT refuses at once instead of removing the first
one's .partial from under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from conversion.errors import OutputBusyError, OutputExistsError

PARTIAL_SUFFIX = ".partial"
LOCK_SUFFIX = ".lock"
_held: set[Path] = set()  # outputs this process has locked (`all` locks its output, then its step does)


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + PARTIAL_SUFFIX)


def check_output(out: Path, force: bool) -> None:
    """Refuse to overwrite an existing output unless forced, saying how to proceed."""
    if out.exists() and not force:
        raise OutputExistsError(
            f"{out} already exists; not overwriting it. Pass --force to replace it, or choose another --out path."
        )


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold OUT.lock for the block; OutputBusyError at once if another process holds it."""
    out = Path(out).absolute()
    if out in _held:
        yield
        return
    made = [d for d in (out.parent, *out.parent.parents) if not d.exists()]  # to remove again if left empty
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(out.name + LOCK_SUFFIX)
    for _ in range(10):  # retried only when the holder removed the file as we opened it
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"another run is writing {out} right now (it holds {lock}); wait for it to finish, "
                "or choose another --out path."
            ) from None
        try:
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    else:
        raise OutputBusyError(f"could not lock {lock}: other runs keep replacing it")
    _held.add(out)
    try:
        yield
    finally:
        _held.discard(out)
        lock.unlink(missing_ok=True)  # still locked: nobody can take it between unlink and close
        os.close(fd)
        for d in made:  # a run that wrote nothing leaves no folders behind either
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def atomic_output(out: Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; rename it to `out` only if the block succeeds."""
    out = Path(out)
    with output_lock(out):
        check_output(out, force)
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
