"""Chat messages -> prompt tokens, in the model's own format.

With a chat template in the GGUF metadata (or a template file from the settings)
the messages are rendered by a sandboxed Jinja environment set up the way
Hugging Face and llama-cpp-python do it (trim_blocks, lstrip_blocks, loop
controls, raise_exception, bos_token/eos_token, add_generation_prompt), and the
text is tokenized with special tokens parsed in the template's own text only:
the messages' contents are plain text (server/model/pieces.py), so typing
"<|im_end|>" or "<end_of_turn>" cannot forge a turn. Without a template, the
Llama-2-chat format is built token by token, as Meta's reference code does: each
exchange is `<s>[INST] ... [/INST] answer </s>`, the system prompt inside the
first one, and all text tokenized with special tokens *not* parsed, so typing
"</s>" cannot forge a turn either. Either way the prompt starts with exactly one BOS.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, NoReturn, Protocol, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from server.errors import InvalidRequest
from server.model.pieces import SplitFailed, has_control_text, split_render, tokens_of

# tokenize(text, special) -> token ids, never adding BOS itself.
Tokenize = Callable[[str, bool], list[int]]


@dataclass(frozen=True)
class ToolCall:
    """A function call an assistant made: `arguments` is JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant" | "tool" (a tool's result: see server/model/tools.py)
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant's calls
    tool_call_id: str | None = None  # for role "tool": the call this result answers


@dataclass(frozen=True)
class Vocab:
    """The few vocabulary facts prompt building needs."""

    tokenize: Tokenize
    bos_id: int
    eos_id: int
    bos_text: str
    eos_text: str
    add_bos: bool  # the model expects a leading BOS
    token_attr: Callable[[int], int]  # llama.cpp's llama_token_attr bits of a token id
    token_text: Callable[[int], str]  # a token's text as the vocabulary stores it


def build_messages(system: str, history: Sequence[dict[str, str]], query: str) -> list[Message]:
    return (
        ([Message("system", system)] if system else [])
        + [Message(h["role"], h["content"]) for h in history]
        + [Message("user", query)]
    )


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(
    value: object,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class PromptFormat(Protocol):
    """Messages -> prompt tokens, starting with exactly one BOS when the model wants one."""

    def tokens(self, messages: Sequence[Message], vocab: Vocab) -> list[int]: ...


class JinjaFormat:
    """A chat template from model metadata, rendered in a sandbox."""

    def __init__(self, template: str):
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(), trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        self._template = env.from_string(template)

    def tokens(self, messages: Sequence[Message], vocab: Vocab) -> list[int]:
        def render(contents: Sequence[str]) -> str:
            return self._template.render(
                messages=[{"role": m.role, "content": c} for m, c in zip(messages, contents)],
                bos_token=vocab.bos_text,
                eos_token=vocab.eos_text,
                add_generation_prompt=True,
                raise_exception=_raise_exception,
            )

        contents = [m.content for m in messages]
        try:
            text = render(contents)
        except Exception as exc:  # TemplateError, or a template tripping over the values it was given
            # The template's own words (e.g. "roles must alternate") describe the caller's mistake.
            raise InvalidRequest(f"the model's chat template rejected the conversation: {exc}", "messages") from None
        pieces = split_render(render, contents, text)
        if pieces is not None:
            try:
                return with_one_bos(tokens_of(pieces, vocab.tokenize, vocab.token_attr, vocab.token_text), vocab)
            except SplitFailed:
                pass
        # The template changed a content on its way into the prompt, so contents cannot be told
        # from template text. Tokenizing the whole render is then safe only without control text.
        for i, content in enumerate(contents):
            if has_control_text(content, vocab.tokenize, vocab.token_attr):
                raise InvalidRequest(
                    "a message contains the model's control text, and this chat template rewrites messages "
                    "so that it cannot be kept as plain text",
                    f"messages[{i}].content",
                )
        return with_one_bos(vocab.tokenize(text, True), vocab)


class Llama2Format:
    """Meta's Llama-2-chat layout, built from token pieces."""

    def tokens(self, messages: Sequence[Message], vocab: Vocab) -> list[int]:
        system = "".join(m.content for m in messages if m.role == "system")
        turns = [m for m in messages if m.role != "system"]
        tokens: list[int] = []
        pending_user: str | None = None
        for m in turns:
            if m.role == "user":
                if pending_user is not None:  # two user turns in a row: keep both in one [INST]
                    pending_user += "\n" + m.content
                    continue
                pending_user = m.content
                if system and not tokens:
                    pending_user = f"<<SYS>>\n{system}\n<</SYS>>\n\n{pending_user}"
            else:
                tokens += self._exchange(pending_user or "", m.content, vocab)
                pending_user = None
        tokens += [vocab.bos_id] + self._text(f"[INST] {(pending_user or '').strip()} [/INST]", vocab)
        return with_one_bos(tokens, vocab)

    def _exchange(self, user: str, answer: str, vocab: Vocab) -> list[int]:
        return [vocab.bos_id] + self._text(f"[INST] {user.strip()} [/INST] {answer.strip()} ", vocab) + [vocab.eos_id]

    @staticmethod
    def _text(text: str, vocab: Vocab) -> list[int]:
        return vocab.tokenize(text, False)


def with_one_bos(tokens: list[int], vocab: Vocab) -> list[int]:
    """Exactly one leading BOS when the model wants one: add it if missing, drop doubles."""
    if not vocab.add_bos:
        return tokens
    start = 0
    while start < len(tokens) and tokens[start] == vocab.bos_id:
        start += 1
    return [vocab.bos_id] + tokens[start:]


def choose_format(template: str | None) -> PromptFormat:
    return JinjaFormat(template) if template else Llama2Format()
