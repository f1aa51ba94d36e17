"""`python -m server`: flags beat LLAMA_SERVER_* variables, bad values stop it before gunicorn starts."""

from __future__ import annotations

import subprocess
import sys

import requests

from server.__main__ import main, settings_environ
from tests.server.gunicorn_util import ROOT, run_gunicorn


def test_flags_override_the_environment():
    env = settings_environ(["--n-ctx", "1024", "--port", "8123"], {"LLAMA_SERVER_N_CTX": "2048", "HOME": "/x"})
    assert (env["LLAMA_SERVER_N_CTX"], env["LLAMA_SERVER_PORT"], env["HOME"]) == ("1024", "8123", "/x")


def test_a_bad_flag_value_names_the_variable_and_exits_2(capsys):
    assert main(["--n-ctx", "many"]) == 2
    assert "LLAMA_SERVER_N_CTX" in capsys.readouterr().err


def test_help_lists_every_setting_with_its_variable():
    out = subprocess.run([sys.executable, "-m", "server", "--help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "--n-gpu-layers" in out and "[LLAMA_SERVER_N_GPU_LAYERS]" in out


def test_served_with_flags(gemma_gguf, tmp_path):
    """A real server started by `python -m server`: the flag's n_ctx wins over the variable's."""
    command = [sys.executable, "-m", "server", "--n-ctx", "384"]
    with run_gunicorn(gemma_gguf, tmp_path, command=command, LLAMA_SERVER_N_CTX="512") as (_, base):
        assert requests.get(f"{base}/api/health", timeout=5).json()["n_ctx"] == 384
