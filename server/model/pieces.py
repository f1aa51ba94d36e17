"""A rendered prompt as pieces: the template's own text, and text that came from a request.

Only the template's pieces may turn into control tokens (`<|im_start|>`, `<start_of_turn>`,
BOS ...). Text from a request (a query, a system prompt, earlier turns) is tokenized as
plain text, so a user who types `<|im_end|>` gets the characters, not the marker.

To find the pieces, a chat template is rendered twice: with the real contents (the text
llama.cpp's server would tokenize) and with a unique mark in place of each content. The
mark keeps the content's leading and trailing whitespace around it, so a template that
trims content (`| trim`) trims the same; it is split on afterwards. The template's pieces
are then the template's output over marks alone, so no request text is in them but the
whitespace around a content (and no control token's text has whitespace: checked). The
split is used only if putting the contents back where the marks are gives the real render
exactly, which proves the contents went in unchanged (a template that drops a message or
repeats one still passes; one that rewrites a content, `| upper`, does not); otherwise
`split_render` returns None and the caller falls back.

Tokenizing the pieces follows llama.cpp's own order so that an ordinary conversation gets
the very tokens `tokenize(render, special=True)` gives: control tokens are found in the
template's pieces only, and everything between two control tokens (template text and
content alike) is tokenized together as plain text, as llama.cpp tokenizes each fragment
between special tokens.
"""

from __future__ import annotations

import re
import secrets
from typing import Callable, Sequence

Tokenize = Callable[[str, bool], list[int]]  # (text, parse special tokens) -> ids, never adding BOS

# llama.cpp's token attributes (llama_token_attr): the tokens its special parsing may produce
# and that plain tokenizing never does, and the whitespace-stripping flags they may carry.
ATTR_UNKNOWN, ATTR_CONTROL, ATTR_LSTRIP, ATTR_RSTRIP = 1 << 0, 1 << 3, 1 << 7, 1 << 8
C_SPACE = " \t\n\v\f\r"  # isspace() in C, as llama.cpp strips around LSTRIP/RSTRIP tokens

Piece = tuple[str, bool]  # (text, from the template: special tokens may be parsed in it)


class SplitFailed(Exception):
    """A template piece's control tokens could not be located in its text."""


def split_render(render: Callable[[list[str]], str], contents: Sequence[str], real: str) -> list[Piece] | None:
    """The pieces of `real` (= render(contents)), or None when the template changed a content."""
    nonce = secrets.token_hex(8)
    while any(nonce in c for c in contents):  # a content that guessed the nonce: take another
        nonce = secrets.token_hex(8)
    marks = [f"\u27e6{nonce}:{i}\u27e7" for i in range(len(contents))]
    values = []
    for content, mark in zip(contents, marks):
        core = content.strip()
        if not core:  # whitespace only: nothing in it can become a control token
            values.append(content)
            continue
        start = content.index(core)
        values.append(content[:start] + mark + content[start + len(core) :])
    try:
        marked = render(values)
    except Exception:  # the template refuses marks it accepted contents for: fall back
        return None
    pieces: list[Piece] = []
    pattern = re.compile(re.escape("\u27e6" + nonce + ":") + r"(\d+)" + re.escape("\u27e7"))
    cursor = 0
    for match in pattern.finditer(marked):
        i = int(match.group(1))
        if i >= len(contents):
            return None
        pieces += [(marked[cursor : match.start()], True), (contents[i].strip(), False)]
        cursor = match.end()
    pieces.append((marked[cursor:], True))
    # The proof that the marks stood exactly for the contents: the pieces rebuild the real render.
    if "".join(text for text, _ in pieces) != real:
        return None
    return pieces


def tokens_of(
    pieces: Sequence[Piece], tokenize: Tokenize, token_attr: Callable[[int], int], token_text: Callable[[int], str]
) -> list[int]:
    """Token ids of the pieces: control tokens only from the template's pieces.

    `tokenize(text, special)`, `token_attr(id)` and `token_text(id)` are the vocabulary's.
    Raises SplitFailed when a control token llama.cpp found cannot be located in the text."""
    out: list[int] = []
    run = ""  # plain text since the last control token: llama.cpp tokenizes it as one fragment
    strip_next = False  # the last control token eats the whitespace after it (RSTRIP)
    for text, trusted in pieces:
        for part in _split_special(text, tokenize, token_attr, token_text) if trusted else [text]:
            if isinstance(part, str):
                if strip_next:
                    part = part.lstrip(C_SPACE)
                    strip_next = not part
                run += part
                continue
            attr = token_attr(part)
            if attr & ATTR_LSTRIP:
                run = run.rstrip(C_SPACE)
            if run:
                out += tokenize(run, False)
            run = ""
            out.append(part)
            strip_next = bool(attr & ATTR_RSTRIP)
    if run:
        out += tokenize(run, False)
    return out


def _split_special(
    text: str, tokenize: Tokenize, token_attr: Callable[[int], int], token_text: Callable[[int], str]
) -> list[str | int]:
    """`text` as plain strings and control token ids, where llama.cpp's special parsing splits it."""
    special = [t for t in tokenize(text, True) if token_attr(t) & (ATTR_CONTROL | ATTR_UNKNOWN)]
    parts: list[str | int] = []
    cursor = 0
    for token in special:
        marker = token_text(token)
        at = text.find(marker, cursor) if marker else -1
        if at < 0 or any(c.isspace() for c in marker):  # a content's whitespace may be in `text`
            raise SplitFailed(f"control token {token} ({marker!r}) cannot be placed in the template's text")
        parts += [text[cursor:at], token]
        cursor = at + len(marker)
    parts.append(text[cursor:])
    return [p for p in parts if p != ""]


def has_control_text(text: str, tokenize: Tokenize, token_attr: Callable[[int], int]) -> bool:
    """Whether special parsing would find a control token in `text`."""
    return any(token_attr(t) & (ATTR_CONTROL | ATTR_UNKNOWN) for t in tokenize(text, True))
