"""Ollama's bodies (/api/chat, /api/generate) -> the engine's Request.

Limits come from the shared table (server/http/fields.py); errors name the field as
Ollama's users write it (`options.temperature`, `messages[1].content`). Ollama's
options fall in three groups: those the engine honours (OPTIONS), those that set up
the model at load time, which the server's settings decide here (LOAD_TIME, accepted
and ignored, as the ones Ollama itself no longer reads), and sampling controls the
engine lacks, accepted only at their neutral value (NEUTRAL). An option name Ollama
does not define is refused (Ollama only logs it), so a typo is not silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from server.engine.request import Grammar, Message, Request, ToolChoice
from server.errors import InvalidRequest
from server.http.defaults import defaults as dialect_defaults
from server.http.fields import LIMITS, Limit, check, check_body, check_json_schema, check_stop, sampling
from server.http.ollama.tools import Results, calls_of
from server.http.openai.tools import tools_of

NUMBER, INT, BOOL = Limit((int, float)), Limit(int), Limit(bool)
# Each option the engine honours -> the row of the shared table that limits it.
OPTIONS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
}
LOAD_TIME = {
    **dict.fromkeys(("num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep", "draft_num_predict"), INT),
    **dict.fromkeys(("numa", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mmap", "use_mlock"), BOOL),
    **dict.fromkeys(("embedding_only", "penalize_newline"), BOOL),
    **dict.fromkeys(("mirostat_tau", "mirostat_eta"), NUMBER),  # read only with mirostat, which stays off
}
NEUTRAL = {
    "typical_p": (NUMBER, 1, "use top_p or min_p"),
    "tfs_z": (NUMBER, 1, "use top_p or min_p"),
    "mirostat": (INT, 0, "use temperature with top_p or min_p"),
}
COMMON = {
    "model": Limit(str, 1, 256, required=True),
    "stream": BOOL,
    "options": Limit(dict),
    "format": Limit((str, dict)),
    "keep_alive": LIMITS["keep_alive"],
    "think": Limit((bool, str)),
    "logprobs": BOOL,
    "top_logprobs": INT,
}
FIELDS = {
    "chat": {**COMMON, "messages": Limit(list, 0, (LIMITS["history"].high or 0) * 2 + 2), "tools": Limit(list)},
    "generate": {
        **COMMON,
        "prompt": LIMITS["content"],
        "system": LIMITS["system"],
        "raw": BOOL,
        "suffix": Limit(str),
        "images": Limit(list),
        "template": Limit(str),
        "context": Limit(list),
    },
}
ROLES = ("system", "user", "assistant", "tool")
# The engine's field names as Ollama's users know them.
NAMES = {"messages": "messages", "query": "prompt", "schema": "format"}


@dataclass(frozen=True)
class OllamaCall:
    model: str  # as the client named it; answers echo it, as Ollama does
    request: Request | None  # None: nothing to generate (Ollama's way to load a model)


def validate_ollama(kind: str, body: Any, settings, defaults: Mapping[str, Any] = MappingProxyType({})) -> OllamaCall:
    """Check a chat ("chat") or generate ("generate") body; `settings`: the server's (limits, defaults);
    `defaults`: the model's own sampling defaults, from its preset."""
    check_body(body, FIELDS[kind])
    _refuse_unsupported(body)
    values = _options(body.get("options") or {}, settings, defaults)
    messages = _chat_messages(body) if kind == "chat" else _generate_messages(body)
    model, stream = body["model"], body.get("stream") is not False  # Ollama streams unless told not to
    grammar = _format(body.get("format"))
    tools = tools_of(body["tools"]) if body.get("tools") else ()
    if messages is None:
        return OllamaCall(model, None)
    params = sampling(values)
    if isinstance(messages, str):  # raw: the prompt as written, no template
        return OllamaCall(model, Request(prompt=messages, sampling=params, stream=stream, grammar=grammar))
    return OllamaCall(
        model,
        Request(
            messages=tuple(messages),
            sampling=params,
            stream=stream,
            grammar=grammar,
            tools=tools,
            tool_choice=ToolChoice("auto" if tools else "none"),  # Ollama has no tool_choice: the model decides
        ),
    )


def _format(value: Any) -> Grammar | None:
    """Ollama's `format`: "json" (any JSON object) or a JSON Schema, enforced while generating."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        if value != "json":
            raise InvalidRequest("'format' must be \"json\" or a JSON Schema object", "format")
        return Grammar.json_object()
    check_json_schema(value, "format")
    return Grammar(schema=value)


def _refuse_unsupported(body: dict) -> None:
    """Fields whose feature the engine lacks: accepted only when they ask for nothing."""
    if body.get("think") not in (None, False):
        raise InvalidRequest(f"'{body['model']}' does not support thinking", "think")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InvalidRequest("log probabilities are not returned", "logprobs")
    for name in ("images", "context"):
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported (text only; send the conversation to /api/chat)", name)
    for name in ("suffix", "template"):
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported: the model's own chat template is used", name)


def _options(options: dict, settings, defaults: Mapping[str, Any]) -> dict:
    """The sampling values: Ollama's defaults, the model's (its preset), then the options laid over them."""
    values = dialect_defaults("ollama", defaults) | {"max_tokens": settings.max_tokens}
    for name, value in options.items():
        where = f"options.{name}"
        if value is None:
            continue
        if name in OPTIONS:
            if name == "seed" and value == -1:  # Ollama's "a random seed"
                continue
            check(where, value, LIMITS[OPTIONS[name]])
            values[name] = value
        elif name == "num_predict":
            values["max_tokens"] = _num_predict(value, settings)
        elif name == "num_ctx":
            check(where, value, Limit(int, 1, settings.n_ctx))  # a larger context cannot be had per request
        elif name == "repeat_last_n":
            check(where, value, Limit(int, -1, settings.n_ctx))
            values[name] = settings.n_ctx if value == -1 else value
        elif name in LOAD_TIME:
            check(where, value, LOAD_TIME[name])
        elif name in NEUTRAL:
            limit, neutral, advice = NEUTRAL[name]
            check(where, value, limit)
            if value != neutral:
                raise InvalidRequest(f"only {where}={neutral} is supported: {advice}", where)
        else:
            raise InvalidRequest(f"unknown option '{where}'", where)
    check_stop(values, "options.stop")
    return values


def _num_predict(value: Any, settings) -> int:
    """Ollama's -1 (no limit) and -2 (fill the context) become the server's largest max_tokens."""
    check("options.num_predict", value, Limit(int, -2, settings.max_tokens_ceiling))
    if value in (-1, -2):
        return settings.max_tokens_ceiling
    if value == 0:
        raise InvalidRequest("'options.num_predict' must be -1, -2 or at least 1", "options.num_predict")
    return value


def _chat_messages(body: dict) -> list[Message] | None:
    items, results = body.get("messages") or [], Results()
    return [_message(i, m, results) for i, m in enumerate(items)] or None


def _message(i: int, item: Any, results: Results) -> Message:
    where = f"messages[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("role"), str):
        raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'", where)
    if item["role"] not in ROLES:
        raise InvalidRequest(f"'{where}.role' must be one of {', '.join(ROLES)}", f"{where}.role")
    if item.get("images"):
        raise InvalidRequest(f"'{where}.images' is not supported (text only)", f"{where}.images")
    # "thinking" is what a thinking model said before its answer; clients echo it back.
    extra = sorted(set(item) - {"role", "content", "images", "tool_calls", "tool_name", "thinking"})
    if extra:
        raise InvalidRequest(f"unknown field '{where}.{extra[0]}'", f"{where}.{extra[0]}")
    content = item.get("content") or ""
    check(f"{where}.content", content, LIMITS["content"])
    if item["role"] == "tool":
        return results.result(where, item, content)
    if item.get("tool_calls"):
        if item["role"] != "assistant":
            raise InvalidRequest(f"only an assistant message has '{where}.tool_calls'", f"{where}.tool_calls")
        calls = calls_of(f"{where}.tool_calls", item["tool_calls"])
        results.called(calls)
        return Message("assistant", content, tool_calls=calls)
    return Message(item["role"], content)


def _generate_messages(body: dict) -> list[Message] | str | None:
    prompt, system = body.get("prompt") or "", body.get("system")
    if body.get("raw"):
        if system:
            raise InvalidRequest("raw mode does not support template, system, or context", "system")
        return prompt or None
    if not prompt:
        return None
    return ([Message("system", system)] if system else []) + [Message("user", prompt)]
