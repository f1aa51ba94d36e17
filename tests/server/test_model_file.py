"""A model file that cannot be served stops the server at once, with one line saying why.

A damaged or truncated file is caught before any worker starts (server/model/files.py,
from `python -m server` and server/gunicorn.conf.py); a file whose header is whole
but which llama.cpp still cannot load ends the whole server from inside the worker
(exit code 4, gunicorn's APP_LOAD_ERROR) instead of leaving it answering 503.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from server.model.files import ModelFileError, check_gguf, resolve_model
from tests.server.gunicorn_util import ROOT, SMALL, free_port

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", "server/gunicorn.conf.py", "server.http.app:create_app()"]


def truncated_copy(src: Path, dst: Path, size: int) -> Path:
    with open(src, "rb") as f:
        dst.write_bytes(f.read(size))
    return dst


def test_a_whole_file_passes(gemma_gguf):
    assert check_gguf(gemma_gguf) == gemma_gguf


def test_a_file_cut_in_its_tensor_data_is_refused_naming_it(gemma_gguf, tmp_path):
    cut = truncated_copy(gemma_gguf, tmp_path / "cut.gguf", gemma_gguf.stat().st_size - 1000)
    with pytest.raises(ModelFileError, match="truncated") as err:
        check_gguf(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_a_file_cut_in_its_header_is_refused(gemma_gguf, tmp_path):
    cut = truncated_copy(gemma_gguf, tmp_path / "head.gguf", 5000)
    with pytest.raises(ModelFileError, match="header runs past the end of the file"):
        check_gguf(cut)


def test_a_foreign_file_is_refused_naming_the_setting(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(ModelFileError, match="LLAMA_SERVER_MODEL: not a GGUF file"):
        resolve_model(str(fake))


@pytest.mark.parametrize("command", [[sys.executable, "-m", "server"], GUNICORN], ids=["python -m server", "gunicorn"])
def test_the_entry_points_stop_at_once_on_a_truncated_file(gemma_gguf, tmp_path, command):
    cut = truncated_copy(gemma_gguf, tmp_path / "cut.gguf", gemma_gguf.stat().st_size // 2)
    env = {**os.environ, "LLAMA_SERVER_MODEL": str(cut), "LLAMA_SERVER_PORT": str(free_port())}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "LLAMA_SERVER_MODEL" in lines[0] and str(cut) in lines[0] and "truncated" in lines[0]


def whole_but_unloadable(path: Path) -> Path:
    """A GGUF whose header and tensor data are all there, but llama.cpp refuses it: no tokenizer."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_embedding_length(8)
    writer.add_head_count(1)
    writer.add_context_length(32)
    writer.add_feed_forward_length(16)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_load_failure_in_the_worker_ends_the_server_with_one_line(tmp_path):
    model = whole_but_unloadable(tmp_path / "no-tokenizer.gguf")
    check_gguf(model)  # passes the start-up check: only llama.cpp can tell
    env = {**os.environ, **SMALL, "LLAMA_SERVER_MODEL": str(model), "LLAMA_SERVER_PORT": str(free_port())}
    started = time.monotonic()
    proc = subprocess.run(GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4  # gunicorn's master halted on the worker's APP_LOAD_ERROR
    assert time.monotonic() - started < 30
    assert "Traceback" not in proc.stderr
    said = [line for line in proc.stderr.splitlines() if str(model) in line]
    assert len(said) == 1 and "cannot load the model file" in said[0] and "tokenizer.ggml.model" in said[0]


def test_the_draft_model_is_checked_too_naming_its_setting(gemma_gguf, tmp_path):
    from server.model.files import check_model_files
    from server.settings import Settings

    cut = truncated_copy(gemma_gguf, tmp_path / "draft.gguf", 5000)
    settings = Settings(model=str(gemma_gguf), speculative="draft", draft_model=str(cut))
    with pytest.raises(ModelFileError, match="LLAMA_SERVER_DRAFT_MODEL: the header runs past"):
        check_model_files(settings)
