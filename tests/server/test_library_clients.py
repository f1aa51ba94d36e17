"""The model library through the official `ollama` and `openai` clients, against real gunicorn
serving a folder of real models (SmolLM2 as the default, Gemma 3 beside it) and pulling from a
loopback Hub.

Each ecosystem's management calls work as its users write them: list, ps, show, copy, delete,
pull (streamed progress), load and unload by an empty generate; OpenAI's model list carries
llama-server's status; metrics carry the model that served.
"""

from __future__ import annotations

import ollama
import openai
import pytest
import requests

from server.model.files import GEMMA_FILE, SMOLLM2_FILE
from tests.server.conftest import metric
from tests.server.file_hub import FileHub
from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow
SMOL, GEMMA = SMOLLM2_FILE.removesuffix(".gguf"), GEMMA_FILE.removesuffix(".gguf")
REPO = "tester/tiny-GGUF"


@pytest.fixture(scope="module")
def hub(tiny_llama_gguf):
    with FileHub({REPO: {"tiny-Q4_K_M.gguf": tiny_llama_gguf.read_bytes()}}) as server:
        yield server


@pytest.fixture(scope="module")
def base(tmp_path_factory, smollm2_gguf, gemma_gguf, hub):
    folder = tmp_path_factory.mktemp("clients-library")
    (folder / f"{GEMMA}.gguf").symlink_to(gemma_gguf)
    with run_gunicorn(
        smollm2_gguf,
        tmp_path_factory.mktemp("clients-gunicorn"),
        LLAMA_SERVER_MODELS_DIR=str(folder),
        LLAMA_SERVER_PARALLEL="1",
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path_factory.mktemp("clients-hub")),
        HF_HUB_OFFLINE="0",
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def client(base) -> ollama.Client:
    return ollama.Client(host=base, timeout=120)


def test_list_show_and_the_openai_model_list(client, base):
    names = {m.model for m in client.list().models}
    assert {f"{SMOL}:latest", f"{GEMMA}:latest"} <= names
    shown = client.show(GEMMA)  # not loaded: read from its header
    assert shown.details.family == "gemma3" and shown.modelinfo["general.architecture"] == "gemma3"
    listed = {m.id: m.status for m in openai.OpenAI(base_url=f"{base}/v1", api_key="x").models.list().data}
    assert listed[SMOL] == {"value": "loaded"} and listed[GEMMA] == {"value": "unloaded"}


def test_load_use_and_unload_a_second_model(client, base):
    assert client.generate(model=GEMMA, prompt="").done_reason == "load"
    answer = openai.OpenAI(base_url=f"{base}/v1", api_key="x").chat.completions.create(
        model=GEMMA, messages=[{"role": "user", "content": "Say hi."}], max_tokens=3
    )
    assert answer.model == GEMMA and answer.choices[0].message.content
    running = {m.model: m for m in client.ps().models}
    gemma = running[f"{GEMMA}:latest"]
    assert gemma.size > 200 << 20 and gemma.size_vram == 0 and gemma.expires_at is not None
    text = requests.get(f"{base}/metrics", timeout=5).text
    assert metric(text, "llama_server_generated_tokens_total", f'model="{GEMMA}"') > 0
    assert metric(text, "llama_server_model_ready", f'model="{GEMMA}"') == 1
    assert client.generate(model=GEMMA, prompt="", keep_alive=0).done_reason == "unload"


def test_copy_and_delete(client):
    client.copy(SMOL, "my-assistant")
    assert "my-assistant:latest" in {m.model for m in client.list().models}
    assert client.chat(model="my-assistant", messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2})
    client.delete("my-assistant")
    assert "my-assistant:latest" not in {m.model for m in client.list().models}
    with pytest.raises(ollama.ResponseError) as missing:
        client.delete("my-assistant")
    assert missing.value.status_code == 404


def test_pull_streams_progress_and_the_model_answers_at_once(client):
    progress = list(client.pull(f"hf.co/{REPO}", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success" and "verifying sha256 digest" in statuses
    files = [p for p in progress if p.digest]
    assert files and files[-1].completed == files[-1].total > 0 and files[-1].digest.startswith("sha256:")
    assert "tiny-Q4_K_M:latest" in {m.model for m in client.list().models}
    assert client.generate(model=f"hf.co/{REPO}:Q4_K_M", prompt="hi", options={"num_predict": 2}).done
    with pytest.raises(ollama.ResponseError) as bad:
        client.pull("../../etc/passwd")
    assert bad.value.status_code == 400


def test_an_unknown_model_is_a_404_through_both_clients(client, base):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="gemma-3", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 404 and GEMMA in str(caught.value)
    with pytest.raises(openai.NotFoundError) as missing:
        openai.OpenAI(base_url=f"{base}/v1", api_key="x").chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Hi"}]
        )
    assert "available" in str(missing.value)
