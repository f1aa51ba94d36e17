"""The embedding and rerank bodies of every dialect, checked field by field into engine requests.

Each dialect's fields are a table over fields.py's LIMITS; what a table cannot say (the
shapes `input` may take, the documents of a rerank) is checked here, naming the field
as its users wrote it (`input[3][7]`, `documents[2].text`). Whether a token id is in
the vocabulary, and whether an input fits the model, is the engine's to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.engine.embedding.jobs import EmbedRequest, Input, RankRequest
from server.errors import InvalidRequest
from server.http.fields import LIMITS, Limit, check, check_body

ENCODINGS = ("float", "base64")


def _fields(*names: str, **own: Limit) -> dict[str, Limit]:
    return {**{name: LIMITS[name] for name in names}, **own}


# Every dialect takes `truncate` (default true), an extension where its anchor has none.
FIELDS = {
    "openai": _fields(
        "model",
        "encoding_format",
        "dimensions",
        "user",
        "truncate",
        "embd_normalize",
        input=Limit((str, list), required=True),
    ),
    "ollama": _fields("model", "input", "truncate", "dimensions", "keep_alive", "options"),
    "ollama_legacy": _fields("model", "keep_alive", "options", "truncate", prompt=Limit(str)),
    "llama": _fields("model", "input", "truncate", "embd_normalize", content=Limit((str, list))),
    "rerank": _fields(
        "model",
        "documents",
        "top_n",
        "return_documents",
        "truncate",
        query=Limit(str, required=True),
        texts=Limit(list, 1, None),
        return_text=Limit(bool),
    ),
}


@dataclass(frozen=True)
class EmbedCall:
    model: str | None
    request: EmbedRequest | None  # None: no input (Ollama's way to load a model)
    dimensions: int | None = None
    encoding: str = "float"
    normalize: int = 2  # llama.cpp's embd_normalize (2: L2)
    input_name: str = "input"  # the body's name for what the engine calls `input`


def embed_call(dialect: str, body: Any, max_inputs: int) -> EmbedCall:
    """`dialect`: a FIELDS key. InvalidRequest naming the field for anything out of shape."""
    given = check_body(body, FIELDS[dialect])
    encoding = given.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise InvalidRequest(f"'encoding_format' must be one of {', '.join(ENCODINGS)}", "encoding_format")
    raw, name = _raw_input(dialect, given, body)
    request = None
    if raw is not None:
        inputs, single = parse_input(raw, name, texts_only=dialect.startswith("ollama"), max_inputs=max_inputs)
        request = EmbedRequest(inputs, given.get("truncate", True), single)
    return EmbedCall(
        given.get("model"),
        request,
        given.get("dimensions"),
        encoding,
        -1 if dialect == "ollama_legacy" else given.get("embd_normalize", 2),
        name,
    )


def _raw_input(dialect: str, given: dict[str, Any], body: dict) -> tuple[Any, str]:
    """The body's input and its field name; None where Ollama only loads the model."""
    if dialect == "ollama_legacy":
        return (given["prompt"], "prompt") if given.get("prompt") else (None, "prompt")
    if dialect == "ollama":
        value = given.get("input")
        return (value, "input") if value not in (None, "", []) else (None, "input")
    if dialect == "llama":
        if ("input" in given) == ("content" in given):
            raise InvalidRequest("give one of 'input' or 'content'", "input")
        return (given["input"], "input") if "input" in given else (given["content"], "content")
    return given["input"], "input"


def parse_input(value: Any, name: str, texts_only: bool, max_inputs: int) -> tuple[tuple[Input, ...], bool]:
    """(inputs, whether the body gave one input): a string, a list of token ids, or a list of
    strings and token lists (mixed, as llama-server takes them)."""
    if isinstance(value, str):
        return (value,), True
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"'{name}' must be a string or a non-empty array", name)
    if not texts_only and all(_is_id(t) for t in value):
        return (tuple(value),), True
    if len(value) > max_inputs:
        raise InvalidRequest(f"'{name}' has {len(value)} items; at most {max_inputs} are allowed", name)
    inputs: list[Input] = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(item, str):
            inputs.append(item)
        elif texts_only:
            raise InvalidRequest(f"'{where}' must be a string", where)
        elif isinstance(item, list) and item:
            for j, t in enumerate(item):
                if not _is_id(t):
                    spot = f"{where}[{j}]"
                    raise InvalidRequest(f"'{spot}' must be a token id (an integer of at least 0)", spot)
            inputs.append(tuple(item))
        else:
            raise InvalidRequest(f"'{where}' must be a string or a non-empty array of token ids", where)
    return tuple(inputs), False


def _is_id(value: Any) -> bool:
    return type(value) is int and value >= 0


@dataclass(frozen=True)
class RankCall:
    model: str | None
    request: RankRequest
    top_n: int | None
    return_documents: bool
    tei: bool  # the body named its documents `texts`: answer in TEI's shape


def rank_call(body: Any, max_inputs: int) -> RankCall:
    given = check_body(body, FIELDS["rerank"], {"documents": max_inputs, "texts": max_inputs})
    tei = "texts" in given
    if tei == ("documents" in given):
        raise InvalidRequest("give one of 'documents' or 'texts'", "documents")
    name = "texts" if tei else "documents"
    documents = []
    for i, item in enumerate(given[name]):
        check(f"{name}[{i}]", item, LIMITS["documents.item"])
        if isinstance(item, dict):  # Jina's and Cohere's {"text": ...}
            if set(item) != {"text"} or not isinstance(item["text"], str):
                raise InvalidRequest(f"'{name}[{i}]' must be a string or {{\"text\": a string}}", f"{name}[{i}].text")
            item = item["text"]
        documents.append(item)
    request = RankRequest(given["query"], tuple(documents), given.get("truncate", True))
    return_documents = given.get("return_text" if tei else "return_documents", False)
    return RankCall(given.get("model"), request, given.get("top_n"), return_documents, tei)
