"""The model library with real models: routing by name, loading on demand within a budget,
keep_alive, a load that fails, the management routes, and the estimate against what llama.cpp
measured.

A folder holds links to the real SmolLM2 and Gemma 3 files and the tiny converted Llama; an
app over it (as `make serve` builds one) loads what a request names. The budget tests set
RAM_BUDGET_MB from the estimates themselves, so that two of the models fit and three do not.
"""

from __future__ import annotations

import threading
import time

import pytest

from server.http.app import create_app
from server.library.budget import Budget
from server.model.files import GEMMA_FILE, SMOLLM2_FILE
from server.settings import Settings
from tests.server.conftest import TEST_SETTINGS

SMOL, GEMMA, TINY = SMOLLM2_FILE.removesuffix(".gguf"), GEMMA_FILE.removesuffix(".gguf"), "tiny-llama"
CHAT = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 3, "temperature": 0}
OLLAMA_CHAT = {"messages": CHAT["messages"], "options": {"num_predict": 3}, "stream": False}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, smollm2_gguf, gemma_gguf, tiny_llama_gguf):
    path = tmp_path_factory.mktemp("library")
    for name, target in ((SMOL, smollm2_gguf), (GEMMA, gemma_gguf), (TINY, tiny_llama_gguf)):
        (path / f"{name}.gguf").symlink_to(target)
    return path


def library_app(folder, **settings):
    values = {**TEST_SETTINGS, "models_dir": str(folder), "default_model": TINY, "request_timeout": 60, **settings}
    app = create_app(Settings(**values))
    library = app.extensions["laptop_llama"].library
    assert library.wait_loaded(TINY, 120), library.failures
    return app, library


@pytest.fixture(scope="module")
def served(folder):
    app, library = library_app(folder)
    yield app.test_client(), library
    library.close()


def wait_until(check, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_each_dialect_routes_by_model_and_loads_on_demand(served):
    client, library = served
    assert library.entry(GEMMA) is None
    r = client.post("/v1/chat/completions", json={**CHAT, "model": GEMMA})
    assert r.status_code == 200 and r.json["model"] == GEMMA
    r = client.post("/api/chat", json={"model": f"{SMOL}:latest", **OLLAMA_CHAT})
    assert r.status_code == 200 and r.json["model"] == f"{SMOL}:latest" and r.json["load_duration"] > 0
    r = client.post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2})
    assert r.status_code == 200 and r.json["model"] == GEMMA
    r = client.post("/api/respond", json={"query": "hi", "max_tokens": 2})
    assert r.status_code == 200 and r.json["model"] == TINY  # no name: the default model
    smol = client.post("/tokenize", json={"content": "Hello", "model": SMOL}).json["tokens"]
    gemma = client.post("/tokenize", json={"content": "Hello", "model": GEMMA}).json["tokens"]
    assert smol != gemma  # two vocabularies
    assert client.post("/detokenize", json={"tokens": gemma, "model": GEMMA}).json["content"] == "Hello"
    running = {m["name"] for m in client.get("/api/ps").json["models"]}
    assert running == {f"{n}:latest" for n in (SMOL, GEMMA, TINY)}
    listed = {m["id"]: m["status"]["value"] for m in client.get("/v1/models").json["data"]}
    assert listed == {SMOL: "loaded", GEMMA: "loaded", TINY: "loaded"}


def test_an_unknown_name_is_a_404_naming_the_nearest_first(served):
    client, _ = served
    r = client.post("/v1/chat/completions", json={**CHAT, "model": "gema-3"})
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
    assert r.json["error"]["message"].startswith(f"model 'gema-3' not found; available: {GEMMA}")
    r = client.post("/api/chat", json={"model": "smol", **OLLAMA_CHAT})
    assert r.status_code == 404 and SMOL in r.json["error"]
    for bad in ("../models/x", "/etc/passwd", "a\x00b", "http://x/y.gguf"):
        r = client.post("/api/generate", json={"model": bad, "prompt": "hi"})
        assert r.status_code == 400 and "model" in r.json["error"], bad


def test_the_estimate_is_within_15_percent_of_what_llama_cpp_measured(served):
    client, library = served
    for name in (SMOL, GEMMA, TINY):
        client.post("/api/generate", json={"model": name, "stream": False})  # load
    for name in (SMOL, GEMMA, TINY):
        entry = library.entry(name)
        assert entry is not None and entry.measured
        measured, estimate = entry.memory, entry.estimate
        assert abs(estimate.total - measured.total) <= 0.15 * measured.total, (name, estimate, measured)
        assert measured.weights_ram > 0 and measured.kv_ram > 0 and measured.compute_ram > 0


def test_keep_alive_zero_unloads_when_idle_and_empty_generate_loads(served):
    client, library = served
    r = client.post("/api/generate", json={"model": GEMMA})
    assert r.json["done_reason"] == "load" and library.entry(GEMMA) is not None
    r = client.post("/api/generate", json={"model": GEMMA, "keep_alive": 0})
    assert r.status_code == 200 and r.json["done_reason"] == "unload"
    wait_until(lambda: library.entry(GEMMA) is None)
    r = client.post("/v1/chat/completions", json={**CHAT, "model": GEMMA, "keep_alive": "1s"})
    assert r.status_code == 200
    expires = next(m["expires_at"] for m in client.get("/api/ps").json["models"] if m["name"].startswith(GEMMA))
    assert expires < "2100"  # a real time, not "forever"
    wait_until(lambda: library.entry(GEMMA) is None, 20)  # 1 s after its last request
    r = client.post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2, "keep_alive": "soon"})
    assert r.status_code == 400 and r.json["error"]["field"] == "keep_alive"


def test_a_model_that_cannot_load_fails_its_requests_and_nothing_else(served, folder):
    client, library = served
    broken = folder / "broken.gguf"
    broken.write_bytes((folder / f"{SMOL}.gguf").read_bytes()[: 1 << 20])  # a truncated copy
    try:
        r = client.post("/v1/chat/completions", json={**CHAT, "model": "broken"})
        assert r.status_code == 503 and "broken" in r.json["error"]["message"], r.json
        status = {m["id"]: m["status"] for m in client.get("/models").json["data"]}
        assert status["broken"]["failed"] and status["broken"]["value"] == "unloaded"
        assert client.post("/v1/chat/completions", json={**CHAT, "model": SMOL}).status_code == 200
        assert client.get("/api/health").status_code == 200
    finally:
        broken.unlink()


def test_router_load_and_unload_in_llama_servers_shape(served):
    client, library = served
    client.post("/models/unload", json={"model": GEMMA})
    wait_until(lambda: library.entry(GEMMA) is None)
    assert client.post("/models/load", json={"model": GEMMA}).json == {"success": True}
    again = client.post("/models/load", json={"model": GEMMA})
    assert again.status_code == 400 and "already running" in again.json["error"]["message"]
    assert client.post("/models/unload", json={"model": GEMMA}).json == {"success": True}
    wait_until(lambda: library.entry(GEMMA) is None)
    assert client.post("/models/unload", json={"model": GEMMA}).status_code == 400
    assert client.post("/models/load", json={"model": "nope"}).status_code == 404


def test_show_copy_and_delete_a_copy(served, folder):
    client, library = served
    shown = client.post("/api/show", json={"model": GEMMA}).json  # not loaded: read from its header
    assert shown["details"]["family"] == "gemma3" and shown["model_info"]["general.architecture"] == "gemma3"
    assert client.post("/api/copy", json={"source": SMOL, "destination": "my-smol"}).status_code == 200
    assert (folder / "presets.toml").read_text().count("my-smol") == 1
    assert "my-smol:latest" in {m["name"] for m in client.get("/api/tags").json["models"]}
    r = client.post("/api/chat", json={"model": "my-smol", **OLLAMA_CHAT})
    assert r.status_code == 200 and r.json["model"] == "my-smol"
    assert library.catalog.find("my-smol").path == library.catalog.find(SMOL).path  # one file
    taken = client.post("/api/copy", json={"source": SMOL, "destination": GEMMA})
    assert taken.status_code == 400
    sneaky = client.post("/api/copy", json={"source": SMOL, "destination": "../x"})
    assert sneaky.status_code == 400 and "destination" in sneaky.json["error"]
    assert client.delete("/api/delete", json={"model": "my-smol"}).status_code == 200
    assert "my-smol" not in (folder / "presets.toml").read_text()
    assert (folder / f"{SMOL}.gguf").exists()
    assert client.delete("/api/delete", json={"model": "my-smol"}).status_code == 404


def test_a_budget_for_two_unloads_the_idle_one_and_waits_for_a_busy_one(folder):
    app, library = library_app(folder, request_timeout=8)
    try:
        client = app.test_client()
        assert client.post("/api/generate", json={"model": GEMMA}).status_code == 200
        assert client.post("/api/generate", json={"model": SMOL}).status_code == 200
        held = {n: library.entry(n).memory for n in (TINY, GEMMA, SMOL)}
        # Room for the pinned default (the tiny Llama) and the larger of the other two, not for both.
        reserve = {n: m.ram + m.cache_ram for n, m in held.items()}
        library.budget = Budget(ram=reserve[TINY] + max(reserve[GEMMA], reserve[SMOL]) * 11 // 10, vram=0)
        client.post("/api/generate", json={"model": SMOL, "keep_alive": 0})
        wait_until(lambda: library.entry(SMOL) is None)
        r = client.post("/v1/chat/completions", json={**CHAT, "model": SMOL})
        assert r.status_code == 200  # Gemma was idle: it gave way
        assert library.entry(GEMMA) is None and library.entry(SMOL) is not None
        with library.use(SMOL):  # a request on SmolLM2 holds it: it must not be unloaded
            started = time.monotonic()
            refused = client.post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2})
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0, refused.json
            assert 7.5 < time.monotonic() - started < 60  # it waited for SmolLM2 up to the request timeout
            assert library.entry(SMOL) is not None
        r = client.post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2})
        assert r.status_code == 200 and library.entry(SMOL) is None, r.json
        rss = {m["name"] for m in client.get("/api/ps").json["models"]}
        assert rss == {f"{GEMMA}:latest", f"{TINY}:latest"}
    finally:
        library.close()


def test_requests_for_a_loading_model_share_its_one_load(folder):
    app, library = library_app(folder)
    try:
        results = []
        engines = []

        def ask():
            r = app.test_client().post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2})
            results.append(r.status_code)
            engines.append(id(library.entry(GEMMA).engine) if library.entry(GEMMA) else None)

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [200, 200, 200] and len(set(engines)) == 1
    finally:
        library.close()


RSS_SCRIPT = """
import json, sys, time
from server.http.app import create_app
from server.settings import Settings

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

settings = Settings(models_dir=sys.argv[1], default_model="tiny-llama", n_ctx=512, parallel=2, max_tokens=4)
app = create_app(settings)
library = app.extensions["laptop_llama"].library
assert library.wait_loaded("tiny-llama", 120)
client = app.test_client()
ask = {"query": "hi", "max_tokens": 4}
client.post("/api/respond", json={**ask, "model": "tiny-llama"})

def cycle():
    assert client.post("/api/respond", json={**ask, "model": sys.argv[2]}).status_code == 200
    loaded = rss()
    client.post("/api/generate", json={"model": sys.argv[2], "keep_alive": 0})
    while library.entry(sys.argv[2]) is not None or library._unloading:
        time.sleep(0.05)
    return loaded

cycle()  # once first: what the first load of any model costs for good (imports, caches) is not the model's
before = rss()
loaded = cycle()
print(json.dumps({"before": before, "loaded": loaded, "after": rss()}))
library.close()
"""


def test_unloading_gives_the_memory_back(folder):
    """The process's RSS after an unload is within 5% of what it was before the load (a process
    of its own, so that nothing else the tests hold moves the figures; the model is loaded and
    unloaded once before, so that what a first load costs the process for good, imports and
    caches, is not counted as the model's)."""
    import json
    import subprocess
    import sys

    from tests.server.gunicorn_util import ROOT

    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(folder), GEMMA], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rss = json.loads(done.stdout.strip().splitlines()[-1])
    assert rss["loaded"] - rss["before"] > 300 << 20  # Gemma's weights and buffers really were in memory
    assert abs(rss["after"] - rss["before"]) <= 0.05 * rss["before"], rss


def test_deleting_a_loaded_model_lets_its_running_request_finish(folder, tmp_path, smollm2_gguf):
    spare = folder / "spare.gguf"
    spare.write_bytes(smollm2_gguf.read_bytes())  # a file of its own, to delete
    app, library = library_app(folder)
    try:
        client = app.test_client()
        body = {"model": "spare", "messages": CHAT["messages"], "max_tokens": 40, "stream": True, "ignore_eos": True}
        stream = client.post("/v1/chat/completions", json=body)
        chunks = iter(stream.response)
        first = next(chunks)  # running now
        assert client.delete("/api/delete", json={"model": "spare"}).status_code == 200
        assert not spare.exists() and "spare:latest" not in {m["name"] for m in client.get("/api/tags").json["models"]}
        rest = b"".join(chunks)
        assert b"data: [DONE]" in first + rest and b'"finish_reason": "length"' in rest  # it ran to its end
        wait_until(lambda: library.entry("spare") is None)
        assert client.post("/v1/chat/completions", json={**CHAT, "model": "spare"}).status_code == 404
    finally:
        library.close()
        spare.unlink(missing_ok=True)


def test_a_load_never_pauses_requests_to_loaded_models(folder):
    """While one model loads (held open here: a real load is too quick to watch), the loaded ones answer."""
    from server.engine.engine import Engine

    release = threading.Event()

    class SlowToStart(Engine):
        def start(self):
            release.wait(60)
            return super().start()

    values = {**TEST_SETTINGS, "models_dir": str(folder), "default_model": TINY}
    app = create_app(Settings(**values))
    library = app.extensions["laptop_llama"].library
    assert library.wait_loaded(TINY, 120)
    library._make_engine = SlowToStart
    try:
        loading = threading.Thread(
            target=lambda: app.test_client().post("/api/respond", json={"query": "hi", "model": GEMMA, "max_tokens": 2})
        )
        loading.start()
        wait_until(lambda: library.status(library.catalog.find(GEMMA)) == "loading")
        r = app.test_client().post("/api/respond", json={"query": "hi", "max_tokens": 2})
        assert r.status_code == 200 and r.json["model"] == TINY
        assert library.status(library.catalog.find(GEMMA)) == "loading"  # still: the answer did not wait for it
        release.set()
        loading.join(120)
        assert library.status(library.catalog.find(GEMMA)) == "loaded"
    finally:
        release.set()
        library.close()


def test_a_default_model_that_cannot_fit_the_budget_is_a_failed_load(folder):
    values = {**TEST_SETTINGS, "models_dir": str(folder), "default_model": TINY, "ram_budget_mb": 1}
    app = create_app(Settings(**values))
    library = app.extensions["laptop_llama"].library
    try:
        assert library.wait_loaded(TINY, 60) is False  # what stops gunicorn at start
        assert "needs" in library.failures[TINY] and "budget" in library.failures[TINY]
        health = app.test_client().get("/api/health")
        assert health.status_code == 503 and health.json["status"] == "failed"
    finally:
        library.close()
