"""Ollama's API through Ollama's official Python client, against real gunicorn serving SmolLM2.

The embedded default model, served as `make serve` serves it, answers a plain question
sensibly; plain and streamed answers agree token for token (greedy); the model list,
details and running model describe the served file; options reach the sampler; a bad
option and a wrong model name come back as the client's ResponseError with the status.
"""

from __future__ import annotations

import ollama
import pytest
import requests

from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow
NAME = "smollm2-135m-instruct-q4_1"
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 6}


@pytest.fixture(scope="module")
def base(smollm2_gguf, tmp_path_factory) -> str:
    with run_gunicorn(
        smollm2_gguf,
        tmp_path_factory.mktemp("ollama-gunicorn"),
        LLAMA_SERVER_PARALLEL="2",
        LLAMA_SERVER_MAX_TOKENS_CEILING="256",
    ) as (_, url):
        yield url


@pytest.fixture(scope="module")
def client(base) -> ollama.Client:
    return ollama.Client(host=base, timeout=120)


@pytest.fixture(scope="module")
def plain_chat(client):
    return client.chat(model=NAME, messages=FRANCE, options=GREEDY)


def test_the_default_model_knows_the_capital_of_france(base):
    r = requests.post(f"{base}/api/respond", json={"query": FRANCE[0]["content"], "temperature": 0, "max_tokens": 24})
    assert r.status_code == 200 and "Paris" in r.json()["response"]


def test_chat(plain_chat):
    assert plain_chat.model == NAME and plain_chat.done and plain_chat.done_reason in ("stop", "length")
    assert plain_chat.message.role == "assistant" and plain_chat.message.content.strip()
    assert plain_chat.created_at.endswith("Z")
    assert 0 < plain_chat.eval_count <= GREEDY["num_predict"] and plain_chat.prompt_eval_count > 20
    assert plain_chat.total_duration >= plain_chat.prompt_eval_duration + plain_chat.eval_duration > 0
    assert plain_chat.load_duration == 0  # the model is loaded before any request


def test_streamed_chat_matches_the_plain_answer(client, plain_chat):
    chunks = list(client.chat(model=f"{NAME}:latest", messages=FRANCE, options=GREEDY, stream=True))
    assert len(chunks) > 2 and all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == plain_chat.message.content
    last = chunks[-1]
    assert last.message.content == "" and last.done_reason == plain_chat.done_reason
    assert (last.prompt_eval_count, last.eval_count) == (plain_chat.prompt_eval_count, plain_chat.eval_count)


def test_generate_plain_and_streamed(client):
    plain = client.generate(model=NAME, prompt="Name a colour.", options=GREEDY)
    assert plain.done and plain.response.strip() and 0 < plain.eval_count <= GREEDY["num_predict"]
    streamed = list(client.generate(model=NAME, prompt="Name a colour.", options=GREEDY, stream=True))
    assert "".join(c.response for c in streamed) == plain.response and streamed[-1].done


def test_options_reach_the_sampler(client):
    r = client.chat(
        model=NAME,
        messages=[{"role": "user", "content": "List the numbers from 1 to 10, separated by commas."}],
        options={"temperature": 0, "num_predict": 12, "stop": [", 4"], "seed": 7, "top_k": 20, "num_ctx": 512},
    )
    assert r.message.content.startswith("1, 2, 3") and ", 4" not in r.message.content and r.done_reason == "stop"
    cut = client.generate(model=NAME, prompt="Tell me a long story.", options={"temperature": 0, "num_predict": 3})
    assert cut.eval_count == 3 and cut.done_reason == "length"


def test_a_bad_option_is_a_400(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=NAME, messages=FRANCE, options={"top_p": 5})
    assert err.value.status_code == 400 and err.value.error == "'options.top_p' must be at most 1.0"
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=NAME, messages=FRANCE, options={"num_ctx": 8192})
    assert err.value.status_code == 400 and "'options.num_ctx' must be at most 512" in err.value.error


def test_a_wrong_model_name_is_a_404_naming_the_served_one(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3.2", messages=FRANCE)
    assert err.value.status_code == 404 and NAME in err.value.error


def test_tags_list_the_served_file(client, smollm2_gguf):
    model = next(m for m in client.list().models if m.model == f"{NAME}:latest")  # among the library's
    assert model.model == f"{NAME}:latest" and model.size == smollm2_gguf.stat().st_size
    d = model.details
    assert (d.format, d.family, d.parameter_size, d.quantization_level) == ("gguf", "llama", "135M", "Q4_1")


def test_show_describes_the_model(client):
    shown = client.show(NAME)
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["llama.block_count"] == 30
    assert shown.modelinfo["tokenizer.ggml.tokens"] == []  # arrays left out, as Ollama does unless verbose
    assert "<|im_start|>" in shown.template and shown.capabilities == ["completion", "tools"]
    assert shown.license == "apache-2.0" and "num_ctx" in shown.parameters


def test_ps_lists_the_loaded_model(client):
    (model,) = client.ps().models
    assert model.model == f"{NAME}:latest" and model.context_length == 512 and model.size_vram == 0


def test_version_and_head_on_the_root(base):
    assert requests.get(f"{base}/api/version", timeout=5).json() == {"version": "0.32.15"}
    assert requests.head(f"{base}/", timeout=5).status_code == 200


def test_errors_over_http_have_ollamas_shape(base):
    r = requests.post(f"{base}/api/generate", json={"model": NAME, "prompt": "x", "options": {"seed": "x"}}, timeout=5)
    assert r.status_code == 400 and r.json() == {"error": "'options.seed' must be an integer"}
    r = requests.post(f"{base}/api/chat", data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    assert r.status_code == 400 and list(r.json()) == ["error"]
    r = requests.post(f"{base}/api/chat", data=b"{}", timeout=5)  # not declared JSON: what a page elsewhere sends
    assert r.status_code == 415 and list(r.json()) == ["error"]


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
WEATHER_QUESTION = [{"role": "user", "content": "Use the tool: what is the weather in Paris?"}]
TOOL_GREEDY = {"temperature": 0, "num_predict": 48, "repeat_penalty": 1.0}


def test_a_tool_round_trip(client):
    """The model calls the tool (arguments as an object, valid against its parameters), the program
    answers with a `tool` message naming the tool, and the model replies in words."""
    first = client.chat(model=NAME, messages=WEATHER_QUESTION, tools=[WEATHER], options=TOOL_GREEDY)
    (call,) = first.message.tool_calls
    assert call.function.name == "get_weather" and first.done_reason == "stop"
    assert set(call.function.arguments) == {"city", "unit"} and call.function.arguments["unit"] in ("C", "F")
    assert first.message.content == ""
    history = [
        *WEATHER_QUESTION,
        first.message,
        {"role": "tool", "tool_name": "get_weather", "content": "18 C and sunny"},
    ]
    reply = client.chat(model=NAME, messages=history, options={**TOOL_GREEDY, "num_predict": 24})
    assert reply.message.content.strip() and not reply.message.tool_calls


def test_a_streamed_tool_call_comes_whole(client):
    chunks = list(client.chat(model=NAME, messages=WEATHER_QUESTION, tools=[WEATHER], options=TOOL_GREEDY, stream=True))
    calls = [c.message.tool_calls for c in chunks if c.message.tool_calls]
    assert len(calls) == 1 and not chunks[-1].message.tool_calls and chunks[-1].done
    assert calls[0][0].function.name == "get_weather" and set(calls[0][0].function.arguments) == {"city", "unit"}
    assert all(not c.message.content for c in chunks)  # a call is not content


def test_tools_the_model_need_not_call(client):
    """With tools offered, a direct answer is plain content (Ollama has no tool_choice: the model decides)."""
    r = client.chat(
        model=NAME,
        messages=[{"role": "user", "content": "Say hello to me."}],
        tools=[WEATHER],
        options=TOOL_GREEDY,
    )
    assert r.message.tool_calls or r.message.content.strip()
    assert not (r.message.content or "").lstrip().startswith('{"')  # the tool format never leaks out
