"""The one request the engine serves, whatever dialect it arrived in, and the events it answers with.

Every HTTP dialect (ours, OpenAI's, ...) validates its JSON into a `Request` and
submits it with `Engine.submit`; the engine answers with one typed stream:
`Delta` events carrying text, then exactly one `Done` (or the request's error
raised). Each dialect only translates: JSON -> Request, events -> its wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.engine.logprobs import TokenLogprob
from server.model.prompt import Message, ToolCall
from server.model.tools import Tool, ToolChoice

__all__ = [
    "Message",
    "SamplingParams",
    "Grammar",
    "Request",
    "Delta",
    "Done",
    "TokenLogprob",
    "Tool",
    "ToolCall",
    "ToolChoice",
]


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler; temperature <= 0 means greedy."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0  # subtracted once from each token among the last repeat_last_n
    frequency_penalty: float = 0.0  # subtracted per occurrence among the last repeat_last_n
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias); -inf bans the token
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False  # generate max_tokens even past end-of-generation (benchmarks: equal work)
    grammar: str | None = None  # GBNF the answer must match; the engine sets it from Request.grammar
    logprobs: int | None = None  # report each token's log-probability and this many alternatives (None: no)

    @property
    def penalized(self) -> bool:
        """Whether llama.cpp's penalties sampler would change any logit (it is off otherwise)."""
        return self.repeat_last_n != 0 and (
            self.repeat_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        )

    def __post_init__(self) -> None:
        # Lists arrive from JSON; a tuple keeps the dataclass hashable and frozen.
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if isinstance(self.logit_bias, dict):
            object.__setattr__(self, "logit_bias", tuple(sorted(self.logit_bias.items())))
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


@dataclass(frozen=True)
class Grammar:
    """What an answer must match: a JSON Schema (`schema`) or a GBNF grammar (`gbnf`, llama.cpp's
    format, root rule `root`). The engine turns it into GBNF and checks it before queuing."""

    schema: Any = None
    gbnf: str | None = None

    @classmethod
    def json_object(cls) -> "Grammar":
        """Any JSON object (OpenAI's json_object, our format "json")."""
        return cls(schema={"type": "object"})

    def __post_init__(self) -> None:
        if (self.schema is None) == (self.gbnf is None):
            raise ValueError("a grammar is either a schema or GBNF text")


@dataclass(frozen=True)
class Request:
    """One generation: a conversation (rendered with the model's chat format) or a raw prompt."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None  # raw text, no chat template; special tokens in it are parsed
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    timeout: float | None = None  # seconds, queue wait included (None: the server's REQUEST_TIMEOUT)
    grammar: Grammar | None = None  # constrained decoding: the answer matches it
    tools: tuple[Tool, ...] = ()  # functions the model may call (server/model/tools.py's format)
    tool_choice: ToolChoice = field(default_factory=ToolChoice)

    @property
    def uses_tools(self) -> bool:
        """Whether the answer is in the tool format: a call or a direct response."""
        return bool(self.tools) and self.tool_choice.mode != "none"

    def __post_init__(self) -> None:
        if (self.prompt is None) == (not self.messages):
            raise ValueError("a request has either messages or a prompt")


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text (never a split UTF-8 character, never part of a stop string),
    with the log-probabilities of the tokens it completes when the request asked for them."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Done:
    """The end of an answer. `finish_reason`: "stop" | "length" for a client; "cancelled" |
    "timeout" | "error" reach only the on_done observer (the client gets the error raised)."""

    finish_reason: str
    usage: dict[str, int]  # prompt_tokens, completion_tokens, total_tokens
    timings: dict[str, float]  # queue_ms, prompt_ms, generation_ms, tokens_per_second
    cached_tokens: int = 0  # prompt tokens reused from a slot's cache (metrics only, not in the API)
