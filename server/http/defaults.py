"""The one table of sampling defaults: what each dialect gives a request that leaves a field out.

Each dialect samples as the server it imitates does, so the same request gives the same
answer on both where the kernels agree: /v1 as llama-server, Ollama's /api/chat and
/api/generate as Ollama; /api/respond, which imitates nothing, keeps its own. For one
field the order is: the request's value, else the model's preset (server/library/presets.py),
else this table (no setting of server/settings.py sets sampling server-wide).
The limits of each field are in server/http/fields.py; docs/hooks/docs_hooks.py prints this
table on the /api/respond page, which the OpenAI and Ollama pages link to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# What every dialect leaves off unless asked: no extra penalty, no bias, a random seed, no stop string.
_OFF: dict[str, Any] = {
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "logit_bias": {},
    "seed": None,
    "stop": [],
    "ignore_eos": False,
}

# llama-server: llama.cpp's `common_params_sampling` (common/common.h, the llama.cpp of llama-cpp-python
# 0.3.36), copied into every request before its fields are read (tools/server/server-schema.cpp,
# `eval_llama_cmpl_schema`); /v1/chat/completions passes the OpenAI fields through unchanged. It has no
# repeat penalty (penalty_repeat 1.0, "disabled").
LLAMA_SERVER: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.0,
    "repeat_last_n": 64,
    **_OFF,
}

# Ollama 0.32.15 (the version /api/version reports): `DefaultOptions` in api/types.go, documented in
# docs/modelfile.mdx. min_p is not set there, so 0 (off); repeat_penalty has been 1.0 (off) since 0.32.10,
# 1.1 before.
OLLAMA: dict[str, Any] = {
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
    "repeat_last_n": 64,
    **_OFF,
}

# Ours (/api/respond and the chat page): llama.cpp's truncation, a cooler temperature for chat and a
# light repeat penalty against the loops small models fall into.
RESPOND: dict[str, Any] = {
    "temperature": 0.7,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    **_OFF,
}

DIALECTS: dict[str, dict[str, Any]] = {"respond": RESPOND, "openai": LLAMA_SERVER, "ollama": OLLAMA}
# Whose defaults each dialect's are, and where its rows are shown (the docs' table).
ANCHORS = {"respond": "ours", "openai": "llama-server", "ollama": "Ollama 0.32.15"}
ROUTES = {"respond": "/api/respond", "openai": "/v1/*", "ollama": "/api/chat, /api/generate"}
# The rows the docs' table shows (logit_bias, stop and ignore_eos are off in every dialect).
SHOWN = (
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repeat_penalty",
    "repeat_last_n",
    "presence_penalty",
    "frequency_penalty",
    "seed",
)


def defaults(dialect: str, preset: Mapping[str, Any] = MappingProxyType({})) -> dict[str, Any]:
    """The sampling values a request of `dialect` starts from: the table's, the model's preset over them."""
    return {**DIALECTS[dialect], **preset}
