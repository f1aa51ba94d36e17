"""Changing the library on disk: copying a model (a new name in the presets file) and deleting one.

A copy is never a second copy of the weights: it appends `[models."NEW"]` with
`from = "OLD"` to the presets file. Deleting a copy removes its table; deleting a
file's model removes the file (a pulled one: its snapshot link, and its blob when no
other snapshot links to it). Every write goes to a temporary name and is renamed into
place under a lock, and the file is read back to check it still parses, so a crash or
two writers at once never leave a half-written presets file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Iterator

from server.errors import InvalidRequest
from server.library.catalog import Catalog, Model
from server.library.names import key

_HEADER = re.compile(r'^\s*\[\s*models\s*\.\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_-]+)\s*\]\s*(#.*)?$')


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, text: str) -> None:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # never replace a good file with one that does not parse
        raise InvalidRequest(f"the presets file would not parse after this change: {exc}") from None
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def copy(catalog: Catalog, source: Model, destination: str) -> None:
    """A new name for `source`'s weights (and its preset's settings, through `from`)."""
    if catalog._lookup(destination) is not None:
        raise InvalidRequest(f"a model named '{destination}' already exists", "destination")
    path = catalog.presets_file
    with _locked(path):
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        table = f"[models.{json.dumps(destination)}]\nfrom = {json.dumps(source.name)}\n"
        _write(path, text + ("\n" if text and not text.endswith("\n\n") else "") + table)
    catalog.reload_presets()


def remove_preset(catalog: Catalog, name: str) -> None:
    """Drop the table of `name` from the presets file, leaving every other line as it was."""
    path = catalog.presets_file
    with _locked(path):
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept, skipping = [], False
        for line in lines:
            header = _HEADER.match(line)
            if header:
                written = header.group(1)
                table = json.loads(written) if written.startswith('"') else written
                skipping = key(table) == key(name)
            elif line.lstrip().startswith("["):
                skipping = False
            if not skipping:
                kept.append(line)
        _write(path, "".join(kept))
    catalog.reload_presets()


def delete_file(model: Model) -> None:
    """Remove a model's file; for one in the Hugging Face cache, its link and unshared blob."""
    path = model.path
    if model.source == "cache" and path.is_symlink():
        blob, snapshots = path.resolve(), _snapshot_root(path).parent
        path.unlink()
        if not any(p.is_symlink() and p.resolve() == blob for p in snapshots.rglob("*")):
            blob.unlink(missing_ok=True)
        return
    path.unlink()


def _snapshot_root(path: Path) -> Path:
    """The snapshot folder (snapshots/<commit>) a cached file lies in."""
    for parent in path.parents:
        if parent.parent.name == "snapshots":
            return parent
    return path.parent
