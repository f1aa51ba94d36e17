"""Each dialect's sampling defaults are its anchor's: what a request that leaves a field out gets.

The table (server/http/defaults.py) against the anchors' values written out here from their
sources, then the real thing: real gunicorn serving SmolLM2 through the official `openai` and
`ollama` clients. /v1 has no repeat penalty, as llama-server: a greedy answer's every token is
its top log-probability, and a request leaving the sampling fields out samples bit for bit as one
that writes llama-server's values out (same seed). Ollama's routes likewise with Ollama's values,
which /api/show reports; a model's preset comes before the dialect's default, a request's field
before both.
"""

from __future__ import annotations

import ollama
import openai
import pytest
import requests

from server.http.ollama.schema import validate_ollama
from server.http.openai.schema import validate_openai
from server.http.respond_schema import validate_respond
from server.settings import Settings
from tests.server.gunicorn_util import run_gunicorn

NAME = "smollm2-135m-instruct-q4_1"
PRESET = "smol-penalized"  # the same file under a preset that sets a repeat penalty
LLAMA = [{"role": "user", "content": "Repeat the word llama ten times."}]
# llama.cpp's common_params_sampling (common/common.h), which llama-server's requests start from.
LLAMA_SERVER = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
# Ollama 0.32.15's DefaultOptions (api/types.go); min_p unset there (0).
OLLAMA = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.0, "repeat_last_n": 64}
OURS = {"temperature": 0.7, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1}
SEEDS = (1, 2, 3)


def _sampling(params) -> dict:
    return {k: getattr(params, k) for k in (*OLLAMA, "presence_penalty", "frequency_penalty", "seed")}


def test_each_validator_fills_its_anchors_defaults():
    off = {"presence_penalty": 0.0, "frequency_penalty": 0.0, "seed": None, "repeat_last_n": 64}
    chat = validate_openai("chat", {"messages": LLAMA}, 8, 256).request.sampling
    completion = validate_openai("completion", {"prompt": "Once"}, 8, 256).request.sampling
    assert _sampling(chat) == _sampling(completion) == {**LLAMA_SERVER, **off}
    for kind, body in (("chat", {"model": NAME, "messages": LLAMA}), ("generate", {"model": NAME, "prompt": "Once"})):
        request = validate_ollama(kind, body, Settings()).request
        assert request is not None and _sampling(request.sampling) == {**OLLAMA, **off}
    assert _sampling(validate_respond({"query": "hi"}, 8, 256).sampling) == {**OURS, **off}


def test_a_preset_comes_before_the_dialects_default_and_a_request_before_both():
    preset = {"repeat_penalty": 1.3, "top_p": 0.5}
    chat = validate_openai("chat", {"messages": LLAMA, "top_p": 0.7}, 8, 256, preset).request.sampling
    assert (chat.repeat_penalty, chat.top_p, chat.temperature) == (1.3, 0.7, 0.8)
    body = {"model": NAME, "messages": LLAMA, "options": {"top_p": 0.7, "repeat_last_n": 8}}
    request = validate_ollama("chat", body, Settings(), preset).request
    assert request is not None
    got = request.sampling
    assert (got.repeat_penalty, got.top_p, got.min_p, got.repeat_last_n) == (1.3, 0.7, 0.0, 8)
    answer = validate_respond({"query": "hi", "top_p": 0.7}, 8, 256, preset).sampling
    assert (answer.repeat_penalty, answer.top_p, answer.temperature) == (1.3, 0.7, 0.7)


@pytest.fixture(scope="module")
def base(smollm2_gguf, tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("defaults-gunicorn")
    presets = folder / "presets.toml"
    presets.write_text(f'[models.{PRESET}]\nfrom = "{NAME}"\nrepeat_penalty = 1.1\ntop_k = 20\n')
    with run_gunicorn(
        smollm2_gguf,
        folder,
        LLAMA_SERVER_PARALLEL="2",
        LLAMA_SERVER_MAX_TOKENS_CEILING="256",
        LLAMA_SERVER_MODELS_PRESETS=str(presets),
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def oai(base) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def olla(base) -> ollama.Client:
    return ollama.Client(host=base, timeout=120)


def _greedy(oai: openai.OpenAI, model: str = NAME, **extra):
    answer = oai.chat.completions.create(
        model=model, messages=LLAMA, temperature=0, max_tokens=48, logprobs=True, top_logprobs=1, **extra
    )
    choice = answer.choices[0]
    return choice.message.content, choice.logprobs.content


@pytest.mark.slow
def test_v1_greedy_takes_the_top_log_probability_at_every_token(oai):
    """No repeat penalty: the chosen token is the model's own first choice everywhere, and the word
    comes back after its first use (SmolLM2-135M says it twice, not ten times; under a 1.1 penalty
    it says "LAMA" the second time, which is not its top choice)."""
    text, tokens = _greedy(oai)
    assert len(tokens) > 8 and all(t.token == t.top_logprobs[0].token for t in tokens), text
    assert text.lower().count("llama") >= 2, text
    assert _greedy(oai, extra_body={"repeat_penalty": 1.0})[0] == text


@pytest.mark.slow
def test_v1_without_sampling_fields_samples_as_llama_servers_values_written_out(oai):
    def sample(seed: int, **fields):
        answer = oai.completions.create(model=NAME, prompt="Once upon a time", max_tokens=32, seed=seed, **fields)
        return answer.choices[0].text

    for seed in SEEDS:
        assert sample(seed) == sample(seed, temperature=0.8, top_p=0.95, extra_body=LLAMA_SERVER), seed


@pytest.mark.slow
def test_ollama_routes_sample_as_ollamas_values_written_out(olla):
    def chat(seed: int, **options):
        answer = olla.chat(model=NAME, messages=LLAMA, options={"seed": seed, "num_predict": 32, **options})
        return answer.message.content

    def generate(seed: int, **options):
        options = {"seed": seed, "num_predict": 32, **options}
        return olla.generate(model=NAME, prompt="Once upon a time", options=options).response

    for seed in SEEDS:
        assert chat(seed) == chat(seed, **OLLAMA), seed
        assert generate(seed) == generate(seed, **OLLAMA), seed


@pytest.mark.slow
def test_show_reports_the_parameters_ollamas_routes_apply(olla):
    shown = dict(line.split(None, 1) for line in olla.show(NAME).parameters.splitlines())
    assert {k: float(shown[k]) for k in OLLAMA} == OLLAMA
    assert (shown["num_ctx"], shown["num_predict"]) == ("512", "8") and "seed" not in shown
    preset = dict(line.split(None, 1) for line in olla.show(PRESET).parameters.splitlines())
    assert {k: float(preset[k]) for k in OLLAMA} == {**OLLAMA, "repeat_penalty": 1.1, "top_k": 20}


@pytest.mark.slow
def test_greedy_answers_agree_across_dialects_that_share_a_penalty(oai, olla, base):
    """/v1 and Ollama's routes both sample without a penalty: the same greedy answer; /api/respond
    keeps its 1.1 and a preset's 1.1 comes before /v1's default, and both answer otherwise."""
    text, _ = _greedy(oai)
    answer = olla.chat(model=NAME, messages=LLAMA, options={"temperature": 0, "num_predict": 48})
    assert answer.message.content == text
    ours = requests.post(
        f"{base}/api/respond", json={"query": LLAMA[0]["content"], "temperature": 0, "max_tokens": 48}, timeout=120
    ).json()["response"]
    penalized, tokens = _greedy(oai, PRESET)
    assert ours == penalized != text
    assert any(t.token != t.top_logprobs[0].token for t in tokens)
    assert _greedy(oai, PRESET, extra_body={"repeat_penalty": 1.0})[0] == text  # the request before the preset
