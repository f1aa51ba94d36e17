"""download through the real huggingface-hub client: offline from a cache, and every error path.

Errors come from a loopback server that answers like the Hub does, so the
exceptions are built by huggingface-hub itself from real HTTP responses.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from conversion.downloader import DiskSpaceError, download
from conversion.errors import DownloadError
from tests.conversion.hub import LoopbackHub, build_cache, error, model_info

ROOT = Path(__file__).resolve().parents[2]
ROUTES = {
    "/api/models/org/gated": error(403, "GatedRepo", "Access to model org/gated is restricted."),
    "/api/models/org/missing": error(401, "RepoNotFound", "Repository not found"),
    "/api/models/org/tiny/revision/nope": error(404, "RevisionNotFound", "Invalid rev id: nope"),
    "/api/models/org/huge": model_info(
        "org/huge",
        {
            "config.json": 600,
            "model-00001-of-00002.safetensors": 10**15,
            "model-00002-of-00002.safetensors": 10**15,
            "README.md": 10**16,
        },
    ),
    "/api/models/org/pytorch-only": model_info("org/pytorch-only", {"config.json": 600, "pytorch_model.bin": 10**9}),
}


@pytest.fixture(scope="module")
def hub():
    with LoopbackHub(ROUTES) as server:
        yield server


def run_cli(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "conversion", *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "repo_id, revision, words",
    [
        ("org/gated", None, ["gated", "accept", "licence", "hf auth login", "HF_TOKEN"]),
        ("org/missing", None, ["not found", "org/missing"]),
        ("org/tiny", "nope", ["Revision 'nope'", "not found"]),
        ("org/pytorch-only", None, ["safetensors", "LlamaForCausalLM"]),
    ],
)
def test_hub_errors_become_clear_messages(hub, tmp_path, repo_id, revision, words):
    with pytest.raises(DownloadError) as caught:
        download(repo_id, tmp_path / "cache", revision=revision, endpoint=hub.url, progress=False)
    message = str(caught.value)
    assert all(w in message for w in words), message
    assert f"/api/models/{repo_id}" + (f"/revision/{revision}" if revision else "") in hub.requests


def test_too_little_disk_is_refused_before_downloading(hub, tmp_path):
    with pytest.raises(DiskSpaceError) as caught:
        download("org/huge", tmp_path / "cache", endpoint=hub.url, progress=False)
    assert "2000000.0 GB" in str(caught.value)  # README.md is not counted: it is not needed
    assert not any((tmp_path / "cache").rglob("*.safetensors*"))


def test_no_network_and_no_cache(tmp_path):
    with socket.socket() as s:  # a port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(DownloadError) as caught:
        download("org/tiny", tmp_path / "cache", endpoint=closed, progress=False)
    assert "Cannot reach the Hugging Face Hub" in str(caught.value)


def test_cli_gated_repo_exits_nonzero_without_traceback(hub, tmp_path):
    result = run_cli(["download", "org/gated", "--dest", str(tmp_path)], HF_ENDPOINT=hub.url)
    assert result.returncode == 4
    assert "accept its licence" in result.stderr and "Traceback" not in result.stderr


def test_all_with_a_mistyped_local_path_says_so_and_creates_nothing(tmp_path):
    """A SOURCE that is no directory is taken for a repo id; an invalid one must not reach the user
    as huggingface-hub's traceback, nor leave a cache folder behind."""
    cache, out = tmp_path / "cache", tmp_path / "models" / "x.gguf"
    got = run_cli(
        ["all", str(tmp_path / "no-such-checkpoint"), "--dest", str(cache), "--out", str(out)], HF_HUB_OFFLINE="1"
    )
    assert got.returncode == 4
    assert "neither an existing checkpoint directory nor a Hugging Face repo id" in got.stderr
    assert "Traceback" not in got.stderr
    assert not cache.exists() and not out.parent.exists()


def test_offline_download_and_all_from_cache(tmp_path, tiny_llama_checkpoint):
    cache = tmp_path / "hf-cache"
    snapshot = build_cache(cache, "org/tiny-llama", tiny_llama_checkpoint)
    got = run_cli(["download", "org/tiny-llama", "--dest", str(cache)], HF_HUB_OFFLINE="1")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip().startswith(f"download: {snapshot.resolve()}  ")
    out = tmp_path / "models" / "tiny.Q4_K_M.gguf"
    got = run_cli(["all", "org/tiny-llama", "--dest", str(cache), "--out", str(out)], HF_HUB_OFFLINE="1")
    assert got.returncode == 0, got.stderr
    assert "quantization:  Q4_K_M" in got.stdout and out.is_file()
    assert got.stdout.strip().splitlines()[-1].startswith(f"all: {out}")
    assert gguf.GGUFReader(out).fields["general.name"].contents() == "tiny-llama"  # not the commit hash


def test_offline_without_cache_says_so(tmp_path):
    got = run_cli(["download", "org/absent", "--dest", str(tmp_path)], HF_HUB_OFFLINE="1")
    assert got.returncode == 4
    assert "Cannot reach the Hugging Face Hub" in got.stderr and "Traceback" not in got.stderr
