"""Pulling from the Hub, through the real huggingface-hub client, against a loopback Hub that
serves real GGUF bytes (tests/server/file_hub.py).

What is checked: the quant tag picks the file (any case, Q4_K_M by default) and a split model
comes whole; Ollama's NDJSON progress (manifest, per file `pulling <digest12>` with total and
completed at most every ~100 ms, verifying, success); the sha256 against the Hub's metadata;
a cut download resumes from its partial file (a Range request) and never looks complete;
two pulls of one file make one download; a gated or missing repo, a missing quant, a file
bigger than the disk and no network each get a clear error; a pulled model is served at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server.errors import ModelNotFound
from server.library.catalog import Catalog
from server.library.names import pull_ref
from server.library.pull import GatedRepo, NameTaken, PullError, pull_model
from server.settings import Settings
from tests.server.file_hub import FileHub
from tests.server.gunicorn_util import ROOT

REPO = "tester/tiny-GGUF"


@pytest.fixture(scope="module")
def gguf_bytes(tiny_llama_gguf) -> bytes:
    return tiny_llama_gguf.read_bytes()


@pytest.fixture
def hub(gguf_bytes):
    files = {
        "tiny-Q4_K_M.gguf": gguf_bytes,
        "tiny-Q8_0.gguf": gguf_bytes[::-1],  # another quant: other bytes, never pulled by default
        "mmproj-tiny-f16.gguf": b"not a model",
        "README.md": b"# tiny",
    }
    split = {f"big-Q4_K_M-0000{i}-of-00002.gguf": gguf_bytes[i::2] for i in (1, 2)}
    with FileHub({REPO: files, "tester/split-GGUF": split}) as server:
        yield server


@pytest.fixture
def catalog(tmp_path) -> Catalog:
    models = tmp_path / "models"
    models.mkdir()
    return Catalog(Settings(models_dir=str(models)), models, cache=tmp_path / "hub")


def test_the_default_quant_is_pulled_with_ollamas_progress(hub, catalog, gguf_bytes):
    hub.rate = 400_000  # a few seconds: progress shows up between the first and the last byte
    seen = []
    name = pull_model(pull_ref(f"hf.co/{REPO}"), catalog, seen.append, endpoint=hub.url)
    assert name == "tiny-Q4_K_M"
    lines = [p.as_dict() for p in seen]
    digest = hashlib.sha256(gguf_bytes).hexdigest()
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-2:] == [{"status": "verifying sha256 digest"}, {"status": "success"}]
    pulling = [line for line in lines if line["status"].startswith("pulling ") and "digest" in line]
    assert {line["status"] for line in pulling} == {f"pulling {digest[:12]}"}
    assert all(line["digest"] == f"sha256:{digest}" and line["total"] == len(gguf_bytes) for line in pulling)
    completed = [line["completed"] for line in pulling]
    assert completed == sorted(completed) and completed[-1] == len(gguf_bytes) and len(set(completed)) > 3
    model = catalog.find(f"hf.co/{REPO}:q4_k_m")  # the tag in any case finds it, as the stem does
    assert model.name == name and model.path.read_bytes() == gguf_bytes and catalog.find(name) == model
    assert not any("Q8_0" in p for _, p, _ in hub.requests) and not any("mmproj" in p for _, p, _ in hub.requests)


def test_a_quant_tag_picks_its_file_and_a_file_reference_names_one(hub, catalog, gguf_bytes):
    assert pull_model(pull_ref(f"hf.co/{REPO}:q8_0"), catalog, lambda p: None, endpoint=hub.url) == "tiny-Q8_0"
    assert catalog.find("tiny-Q8_0").path.read_bytes() == gguf_bytes[::-1]
    name = pull_model(pull_ref(f"{REPO}/tiny-Q4_K_M.gguf"), catalog, lambda p: None, endpoint=hub.url)
    assert catalog.find(f"{REPO}/tiny-Q4_K_M.gguf").name == name == "tiny-Q4_K_M"


def test_a_split_model_is_fetched_whole(hub, catalog):
    name = pull_model(pull_ref("hf.co/tester/split-GGUF"), catalog, lambda p: None, endpoint=hub.url)
    assert name == "big-Q4_K_M"
    fetched = {p for _, p, _ in hub.requests if "/resolve/" in p}
    assert {Path(p).name for p in fetched} == {f"big-Q4_K_M-0000{i}-of-00002.gguf" for i in (1, 2)}
    assert catalog.find(name).path.name == "big-Q4_K_M-00001-of-00002.gguf"


def test_a_missing_quant_lists_the_quants_there_are(hub, catalog):
    with pytest.raises(ModelNotFound, match="no IQ2_XS GGUF; it has: Q4_K_M, Q8_0"):
        pull_model(pull_ref(f"hf.co/{REPO}:iq2_xs"), catalog, lambda p: None, endpoint=hub.url)


def test_a_gated_or_missing_repo_is_a_clear_error(hub, catalog):
    hub.gated.add(REPO)
    with pytest.raises(GatedRepo, match="HF_TOKEN"):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    with pytest.raises(ModelNotFound, match="no repository tester/nothing"):
        pull_model(pull_ref("hf.co/tester/nothing"), catalog, lambda p: None, endpoint=hub.url)


def test_bytes_that_do_not_match_the_hubs_sha256_are_removed(hub, catalog, gguf_bytes):
    hub.lie["tiny-Q4_K_M.gguf"] = ("0" * 64, len(gguf_bytes))
    with pytest.raises(PullError, match="does not match"):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    assert not list(catalog.cache.rglob("*.gguf")) and not list(catalog.cache.rglob("blobs/0*"))


def test_a_file_bigger_than_the_disk_is_refused_before_writing(hub, catalog):
    hub.lie["tiny-Q4_K_M.gguf"] = ("1" * 64, 1 << 60)  # the metadata says an exabyte
    with pytest.raises(PullError, match="not enough disk space"):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    assert not [p for p in hub.requests if "/resolve/" in p[1]]


def test_a_cut_download_leaves_a_partial_file_and_the_next_pull_resumes_it(hub, catalog, gguf_bytes):
    hub.cut_after = len(gguf_bytes) // 3
    with pytest.raises(PullError):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    partial = list(catalog.cache.rglob("*.incomplete"))
    assert len(partial) == 1 and 0 < (kept := partial[0].stat().st_size) < len(gguf_bytes)
    assert not list(catalog.cache.rglob("*.gguf"))  # nothing that looks like a whole model
    hub.cut_after, hub.requests[:] = None, []
    pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    assert [r for _, p, r in hub.requests if "/resolve/" in p] == [f"bytes={kept}-"]  # only the rest was sent
    assert catalog.find("tiny-Q4_K_M").path.read_bytes() == gguf_bytes


def test_two_pulls_of_one_file_share_one_download(hub, catalog, gguf_bytes):
    hub.rate = 1_000_000
    results, errors = [], []

    def pull() -> None:
        try:
            results.append(pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == ["tiny-Q4_K_M"] * 2
    assert len([p for m, p, _ in hub.requests if m == "GET" and "/resolve/" in p]) == 1


def test_a_name_the_library_has_is_refused_without_force(hub, catalog, gguf_bytes):
    (catalog.models_dir / "tiny-Q4_K_M.gguf").write_bytes(gguf_bytes)
    with pytest.raises(NameTaken, match="force"):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint=hub.url)
    pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, force=True, endpoint=hub.url)
    assert catalog.find(f"hf.co/{REPO}:Q4_K_M").source == "cache"


def test_no_network_is_a_clear_error(catalog):
    with pytest.raises(PullError, match="cannot reach the Hub"):
        pull_model(pull_ref(f"hf.co/{REPO}"), catalog, lambda p: None, endpoint="http://127.0.0.1:9")


def test_the_command_line_pulls_with_a_progress_bar(hub, tmp_path):
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HUB_OFFLINE": "0",
        "LLAMA_SERVER_MODELS_DIR": str(tmp_path / "models"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "server", "pull", f"hf.co/{REPO}:Q4_K_M"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "served as 'tiny-Q4_K_M'" in done.stdout and "pulling manifest" in done.stderr
    assert list((tmp_path / "hub").rglob("tiny-Q4_K_M.gguf"))
    bad = subprocess.run(
        [sys.executable, "-m", "server", "pull", "../../etc/passwd"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "not hf.co/USER/REPO" in bad.stderr


def test_the_api_streams_ndjson_and_the_model_is_served_at_once(hub, tmp_path, monkeypatch, tiny_engine):
    from huggingface_hub import constants

    from tests.server.conftest import make_client

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    client = make_client(tiny_engine, models_dir=str(tmp_path / "models"))
    before = {m["name"] for m in client.get("/api/tags").json["models"]}
    response = client.post("/api/pull", json={"model": f"hf.co/{REPO}"})
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    lines = [json.loads(line) for line in response.data.decode().splitlines()]
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    after = {m["name"] for m in client.get("/api/tags").json["models"]}
    assert after - before == {"tiny-Q4_K_M:latest"}
    answer = client.post("/api/generate", json={"model": "tiny-Q4_K_M", "prompt": "hi", "stream": False})
    assert answer.status_code == 200 and answer.json["done"], answer.json
    bad = client.post("/api/pull", json={"model": "/etc/passwd"})
    assert bad.status_code == 400 and "model" in bad.json["error"]
    missing = client.post("/api/pull", json={"model": "hf.co/tester/nothing", "stream": False})
    assert missing.status_code == 404 and "no repository" in missing.json["error"]
