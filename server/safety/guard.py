"""The guard at the seam: `Guard.check(turns) -> Verdict`, and Llama Guard behind it.

`LlamaGuard` is a model of the library like any other (GUARD_MODEL names it): each check
leases it (loading it first if it is not loaded, by the library's rules of budget and
keep-alive), renders the prompt in code (server/safety/prompt.py), tokenizes it with the
template's text allowed control tokens and the messages' not, and submits it through the
engine's normal queue, greedy and constrained by the verdict grammar, with
log-probabilities. Consecutive checks share the prompt's fixed start (task line and
categories), which the engine's prefix cache keeps. A verdict is known at the label's first
token (the two answers differ from their first letter): a safe one returns there, while the
engine writes the rest of `safe` that the grammar forces; an unsafe one reads on for its
categories. Anything that keeps a verdict from coming (the model unknown, failing to load,
no room, the queue full, the timeout) is `GuardFailed`; the policy decides what that means (GUARD_FAILURE).

Tests plug other guards in at this seam (a fake deciding by rule).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Protocol, Sequence

from server.engine.request import Delta, Grammar, Request, SamplingParams, TokenLogprob
from server.errors import PromptTooLong, ServerError
from server.model.pieces import SplitFailed, tokens_of
from server.model.prompt import with_one_bos
from server.safety.prompt import FORMATS, GuardFormat, Turn, render, text_of
from server.safety.verdict import MAX_TOKENS, TOP, Verdict, decide, grammar, score
from server.settings import Settings

log = logging.getLogger("server")
OVERLAP_CHARS = 200  # what two halves of a text too long for the guard share, so nothing is cut unread


class GuardFailed(Exception):
    """No verdict: `reason` is a short word for metrics (unavailable, timeout, error)."""

    def __init__(self, message: str, reason: str = "error") -> None:
        super().__init__(message)
        self.reason = reason


class Guard(Protocol):
    @property
    def format(self) -> GuardFormat: ...

    def check(self, turns: Sequence[Turn]) -> Verdict:
        """The verdict on the last of `turns` (alternating User, Agent, ..., User first)."""
        ...


def detect_format(setting: str, name: str, metadata: dict[str, Any]) -> GuardFormat:
    """GUARD_FORMAT, or with `auto` the version the model's file name and GGUF metadata say."""
    if setting != "auto":
        return FORMATS[setting]
    keys = ("general.name", "general.basename", "general.finetune", "general.size_label")
    words = " ".join([name, *(str(metadata.get(k, "")) for k in keys)]).lower()
    if re.search(r"guard[-_ ]?2", words):
        return FORMATS["llama-guard-2"]
    if re.search(r"(?<![0-9.])1b\b|11b", words):  # 3-1B and 3-11B-Vision: S1-S13
        return FORMATS["llama-guard-3-1b"]
    return FORMATS["llama-guard-3"]


class LlamaGuard:
    def __init__(self, settings: Settings, library: Any, model: str | None = None) -> None:
        self.settings, self.library = settings, library
        self.model = model or settings.guard_model or ""
        self._format: GuardFormat | None = None

    @property
    def format(self) -> GuardFormat:
        if self._format is None:
            metadata: dict[str, Any] = {}
            try:
                from server.model.ggufinfo import read_gguf_info

                metadata = read_gguf_info(Path(self.library.catalog.find(self.model).path)).metadata
            except (ServerError, OSError, ValueError):
                pass  # the name alone decides; an unknown model fails at the check
            self._format = detect_format(self.settings.guard_format, self.model, metadata)
        return self._format

    def check(self, turns: Sequence[Turn]) -> Verdict:
        """The verdict on the last turn. Too long for the guard's context, the oldest exchanges
        go first, then the rest of the context; a last turn still too long is read in two
        overlapping halves (recursively), flagged if either is (never silently cut)."""
        turns = list(turns)
        while True:
            try:
                return self._check(turns)
            except _TooLong:
                if len(turns) > 2:
                    turns = turns[2:]  # the oldest exchange goes; the turn checked stays
                elif len(turns) == 2 and turns[0].text:
                    turns = [Turn("User", ""), turns[1]]  # an answer read without its question
                else:
                    return self._halves(turns)

    def _halves(self, turns: list[Turn]) -> Verdict:
        last = turns[-1]
        if len(last.text) < 2 * OVERLAP_CHARS:
            raise GuardFailed("the text is too long for the guard's context", "too_long")
        middle = len(last.text) // 2
        cut = last.text.rfind(" ", 0, middle) + 1 or middle  # at a space where there is one
        parts = (last.text[: cut + OVERLAP_CHARS], last.text[max(cut - OVERLAP_CHARS, 0) :])
        verdicts = [self.check([*turns[:-1], Turn(last.role, part)]) for part in parts]
        flagged = [v for v in verdicts if v.flagged]
        codes = tuple(dict.fromkeys(c for v in flagged for c in v.categories))
        worst = max(verdicts, key=lambda v: v.score)
        return Verdict(bool(flagged), worst.score, codes, worst.said)

    def _check(self, turns: list[Turn]) -> Verdict:
        fmt, excluded = self.format, self.settings.guard_exclude
        timeout = self.settings.guard_timeout
        pieces = render(fmt, turns, excluded)
        request = Request(
            prompt=text_of(pieces),
            sampling=SamplingParams(temperature=0.0, repeat_penalty=1.0, max_tokens=MAX_TOKENS, logprobs=TOP),
            grammar=Grammar(gbnf=grammar(fmt)),
            timeout=timeout,
        )
        try:
            with self.library.use(self.model, timeout=timeout) as lease:
                try:
                    generation = lease.engine.submit_tokens(_tokens(lease.engine.vocab, pieces), request)
                    generation.live()  # read as it comes: a safe label ends the check at its first token
                except PromptTooLong:
                    raise _TooLong() from None
            said, records = "", list[TokenLogprob]()
            for event in generation:
                if isinstance(event, Delta):
                    said += event.text
                    records.extend(event.logprobs)
                    if said.lstrip("\n").startswith("s"):  # the grammar's "safe": nothing more to read
                        said = "safe"  # the rest is forced; the engine ends the answer on its own
                        break
        except ServerError as exc:  # not found, failed to load, no room, queue full, timeout
            reason = "timeout" if exc.status == 504 else "unavailable"
            raise GuardFailed(f"guard '{self.model}': {exc.message}", reason) from None
        except SplitFailed as exc:
            raise GuardFailed(f"guard '{self.model}': {exc}") from None
        return decide(said, score(records, said), self.settings.guard_threshold, excluded)


class _TooLong(Exception):
    pass


def _tokens(vocab: Any, pieces: list[tuple[str, bool]]) -> list[int]:
    return with_one_bos(tokens_of(pieces, vocab.tokenize, vocab.token_attr, vocab.token_text), vocab)
