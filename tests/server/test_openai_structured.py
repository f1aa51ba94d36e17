"""Structured answers through the official `openai` client, against real gunicorn serving SmolLM2.

What programs do with it: `chat.completions.parse` with a Pydantic model, a tool
round trip (the model calls, the program answers with a `tool` message, the model
replies), tool calls streamed and assembled by the client's own stream helper,
and log-probabilities.
"""

from __future__ import annotations

import datetime
import enum
import json
import uuid
from typing import Optional

import openai
import pytest
from pydantic import BaseModel, Field

from tests.server.gunicorn_util import run_gunicorn

pytestmark = pytest.mark.slow
GREEDY = {"temperature": 0, "extra_body": {"repeat_penalty": 1.0}}


MODEL = "smollm2-135m-instruct-q4_1"  # the served file's stem: its name in the library


@pytest.fixture(scope="module")
def client(smollm2_gguf, tmp_path_factory) -> openai.OpenAI:
    """The embedded default, an instruct model, served as `make serve` serves it (two slots)."""
    with run_gunicorn(
        smollm2_gguf,
        tmp_path_factory.mktemp("structured-gunicorn"),
        LLAMA_SERVER_PARALLEL="2",
        LLAMA_SERVER_N_CTX="1024",
        LLAMA_SERVER_MAX_TOKENS_CEILING="256",
    ) as (_, url):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


class Colour(str, enum.Enum):
    red = "red"
    green = "green"
    blue = "blue"


class Address(BaseModel):
    city: str = Field(max_length=16)
    postcode: Optional[str] = Field(default=None, max_length=8)


class Person(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=18, le=99)
    favourite: Colour
    hobbies: list[str] = Field(max_length=2)
    born: datetime.date
    id: uuid.UUID
    address: Address
    nickname: Optional[str] = Field(default=None, max_length=12)


def test_parse_with_a_pydantic_model(client):
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "Invent a person."}],
        response_format=Person,
        max_tokens=200,
        **GREEDY,
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    person = choice.message.parsed
    assert isinstance(person, Person) and 18 <= person.age <= 99 and len(person.hobbies) <= 2
    assert Person.model_validate_json(choice.message.content) == person


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_a_tool_round_trip(client):
    first = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[WEATHER], tool_choice="required", max_tokens=40, **GREEDY
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"city", "unit"} and arguments["unit"] in ("C", "F")
    history = [
        *QUESTION,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    reply = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=24, **GREEDY
    )
    assert reply.choices[0].message.content.strip() and not reply.choices[0].message.tool_calls


def test_a_named_tool_is_forced_and_ends_with_stop(client):
    named = {"type": "function", "function": {"name": "get_weather"}}
    completion = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[WEATHER], tool_choice=named, max_tokens=40, **GREEDY
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls[0].function.name == "get_weather"


class Unit(str, enum.Enum):
    celsius = "C"
    fahrenheit = "F"


class GetWeather(BaseModel):
    city: str = Field(max_length=20)
    unit: Unit


def test_streamed_tool_calls_are_assembled_by_the_client(client):
    tool = openai.pydantic_function_tool(GetWeather)
    with client.chat.completions.stream(
        model=MODEL, messages=QUESTION, tools=[tool], tool_choice="required", max_tokens=40, **GREEDY
    ) as stream:
        final = stream.get_final_completion()
    (call,) = final.choices[0].message.tool_calls
    assert call.function.name == "GetWeather" and isinstance(call.function.parsed_arguments, GetWeather)
    whole = client.chat.completions.create(
        model=MODEL, messages=QUESTION, tools=[tool], tool_choice="required", max_tokens=40, **GREEDY
    )
    # The same call, whole: valid arguments too (not compared byte for byte: a reused prompt cache
    # may flip a near-tie such as the space after a comma).
    (same,) = whole.choices[0].message.tool_calls
    assert same.function.name == "GetWeather" and GetWeather.model_validate_json(same.function.arguments)


def test_chat_logprobs(client):
    kwargs = dict(model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=5, **GREEDY)
    completion = client.chat.completions.create(logprobs=True, top_logprobs=3, **kwargs)
    choice = completion.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content and len(content) <= 5
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        assert [x.logprob for x in t.top_logprobs] == sorted((x.logprob for x in t.top_logprobs), reverse=True)
        assert t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == pytest.approx(t.logprob)
        assert bytes(t.bytes).decode("utf-8", errors="replace") == t.token
    streamed = [
        entry
        for chunk in client.chat.completions.create(logprobs=True, top_logprobs=3, stream=True, **kwargs)
        if chunk.choices and chunk.choices[0].logprobs
        for entry in chunk.choices[0].logprobs.content
    ]
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    assert client.chat.completions.create(**kwargs).choices[0].logprobs is None


def test_a_schema_that_cannot_be_enforced_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL,
            messages=QUESTION,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "integer", "multipleOf": 3}},
            },
        )
    assert caught.value.body["param"] == "response_format.json_schema.schema.multipleOf"
