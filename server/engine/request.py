"""The one request the engine serves, whatever dialect it arrived in, and the events it answers with.

Every HTTP dialect (ours, OpenAI's, ...) validates its JSON into a `Request` and
submits it with `Engine.submit`; the engine answers with one typed stream:
`Delta` events carrying text, then exactly one `Done` (or the request's error
raised). Each dialect only translates: JSON -> Request, events -> its wire format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from server.model.prompt import Message

__all__ = ["Message", "SamplingParams", "Request", "Delta", "Done"]


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler; temperature <= 0 means greedy."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False  # generate max_tokens even past end-of-generation (benchmarks: equal work)

    def __post_init__(self) -> None:
        # Lists arrive from JSON; a tuple keeps the dataclass hashable and frozen.
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


@dataclass(frozen=True)
class Request:
    """One generation: a conversation (rendered with the model's chat format) or a raw prompt."""

    messages: tuple[Message, ...] = ()
    prompt: str | None = None  # raw text, no chat template; special tokens in it are parsed
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stream: bool = False
    timeout: float | None = None  # seconds, queue wait included (None: the server's REQUEST_TIMEOUT)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (not self.messages):
            raise ValueError("a request has either messages or a prompt")


@dataclass(frozen=True)
class Delta:
    """A piece of the answer's text (never a split UTF-8 character, never part of a stop string)."""

    text: str


@dataclass(frozen=True)
class Done:
    """The end of an answer. `finish_reason`: "stop" | "length" for a client; "cancelled" |
    "timeout" | "error" reach only the on_done observer (the client gets the error raised)."""

    finish_reason: str
    usage: dict[str, int]  # prompt_tokens, completion_tokens, total_tokens
    timings: dict[str, float]  # queue_ms, prompt_ms, generation_ms, tokens_per_second
    cached_tokens: int = 0  # prompt tokens reused from a slot's cache (metrics only, not in the API)
