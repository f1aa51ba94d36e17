"""llama.cpp's grammar sampler for one sequence, and the check a grammar passes before it is queued.

`check_grammar` runs in the caller's thread (the engine's submit): a grammar that
llama.cpp cannot parse is an error with llama.cpp's own words, and a few inputs
that would hang or exhaust its parser (a repetition `{m,n}` with n < m) are refused
before it sees them. `LlamaGrammar` is the per-sequence `Constraint` the decoder
samples under (server/engine/constraints/sampler.py); a test may hand the decoder another
object with the same three methods. `Candidates` is a reusable llama_token_data_array
over numpy memory, so filling one from the logits is a vectorized copy.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
from typing import Protocol

import llama_cpp.llama_cpp as lc
import numpy as np
from llama_cpp import _logger

log = logging.getLogger(__name__)

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
assert TOKEN_DATA.itemsize == ctypes.sizeof(lc.llama_token_data)
_capture = threading.Lock()
_local = threading.local()  # .sink: where this thread's llama.cpp log lines go while a grammar is parsed


@lc.llama_log_callback  # type: ignore[untyped-decorator]  # a ctypes callback type, untyped
def _log_to_sink(level: int, text: bytes, user_data: object) -> None:
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(text.decode("utf-8", errors="replace"))
    else:  # everyone else's lines go where llama-cpp-python sends them
        _logger.llama_log_callback(level, text, user_data)


class GrammarError(ValueError):
    """A grammar llama.cpp cannot use; the message says why."""


class Constraint(Protocol):
    """What the decoder needs of a sequence's grammar."""

    def allows(self, token: int) -> bool:
        """Whether `token` may come next (an end-of-generation token: whether the grammar is complete)."""
        ...

    def mask(self, candidates: "Candidates") -> None:
        """Set the logit of every candidate the grammar forbids to -inf."""
        ...

    def accept(self, token: int) -> None:
        """Advance past `token`, which `allows` said may come next (never another one)."""
        ...

    def clone(self) -> "Constraint":
        """An independent copy in the same state (to try a draft on without changing this one)."""
        ...

    def free(self) -> None: ...


class Candidates:
    """A llama_token_data_array whose entries live in a numpy array of up to `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        self.every_id = np.arange(capacity, dtype=np.int32)
        self.data = np.zeros(capacity, dtype=TOKEN_DATA)
        self.array = lc.llama_token_data_array(self.data.ctypes.data_as(ctypes.POINTER(lc.llama_token_data)), 0, -1, 0)
        self.pointer = ctypes.byref(self.array)

    def fill(self, ids: np.ndarray, logits: np.ndarray) -> None:
        n = len(ids)
        self.data["id"][:n], self.data["logit"][:n], self.data["p"][:n] = ids, logits, 0.0
        self.array.size, self.array.selected, self.array.sorted = n, -1, False

    @property
    def logits(self) -> np.ndarray:
        return self.data["logit"][: self.array.size]

    @property
    def ids(self) -> np.ndarray:
        return self.data["id"][: self.array.size]

    def selected(self) -> int:
        return int(self.data["id"][self.array.selected])


class LlamaGrammar:
    """llama.cpp's grammar sampler over the model's vocabulary."""

    def __init__(self, vocab: object, gbnf: str) -> None:  # vocab: a llama_vocab pointer
        self._sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        if not self._sampler:
            raise GrammarError("llama.cpp could not parse the grammar")
        self._one = Candidates(1)

    def allows(self, token: int) -> bool:
        self._one.fill(np.array([token], dtype=np.int32), np.ones(1, dtype=np.float32))
        lc.llama_sampler_apply(self._sampler, self._one.pointer)
        return bool(np.isfinite(self._one.data["logit"][0]))

    def mask(self, candidates: Candidates) -> None:
        lc.llama_sampler_apply(self._sampler, candidates.pointer)

    def accept(self, token: int) -> None:
        # llama.cpp aborts the process on a token its grammar forbids: callers check `allows` first.
        lc.llama_sampler_accept(self._sampler, token)

    def clone(self) -> "LlamaGrammar":
        copy = LlamaGrammar.__new__(LlamaGrammar)
        copy._sampler, copy._one = lc.llama_sampler_clone(self._sampler), self._one  # one thread uses both
        return copy

    def free(self) -> None:
        if self._sampler:
            lc.llama_sampler_free(self._sampler)
            self._sampler = None


# {m,n} repetitions and parentheses outside string literals, character classes and comments.
_LEXEME = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|#[^\n]*|\{\s*(\d+)\s*(,\s*(\d*)\s*)?\}|([()])', re.S)
# llama.cpp parses nested groups recursively: some tens of thousands of "(" overflow its stack.
MAX_NESTING = 256


def check_grammar(vocab: object, gbnf: str) -> None:  # vocab: a llama_vocab pointer
    """Raise GrammarError unless llama.cpp parses `gbnf` (root rule `root`) for this vocabulary."""
    depth = 0
    for match in _LEXEME.finditer(gbnf):
        low, comma, high, paren = match.groups()
        if low is not None and comma and high and int(high) < int(low):
            raise GrammarError(f"the repetition {match.group(0)} has its maximum below its minimum")
        depth += {"(": 1, ")": -1}.get(paren, 0)
        if depth > MAX_NESTING:
            raise GrammarError(f"groups are nested more than {MAX_NESTING} deep")
    sampler, output = _parse_capturing_stderr(vocab, gbnf)
    if sampler:
        lc.llama_sampler_free(sampler)
        return
    raise GrammarError(_parse_message(output))


def _parse_capturing_stderr(vocab: object, gbnf: str) -> tuple[object, str]:
    """llama.cpp says why a grammar failed partly through its log callback (caught by thread)
    and partly straight to stderr: for those microseconds the whole process's stderr goes to
    a file; anything else written there meanwhile is written back afterwards."""
    lc.llama_log_set(_log_to_sink, ctypes.c_void_p(0))  # again each time: llama-cpp-python may have set its own
    with _capture, tempfile.TemporaryFile() as tmp:
        _local.sink = []
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            sampler = lc.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            logged, _local.sink = _local.sink, None
        tmp.seek(0)
        output = tmp.read().decode("utf-8", errors="replace")
    others = _without_parse_error(output, gbnf)
    if others.strip():  # not llama.cpp's words about this grammar: someone else's, give them back
        sys.stderr.write(others)
    return sampler, output + "".join(logged)


def _without_parse_error(output: str, gbnf: str) -> str:
    """`output` less llama.cpp's "parse: error parsing grammar: ..." paragraph, which ends with
    an echo of the grammar itself."""
    start = output.find("parse: error parsing grammar: ")
    if start < 0:
        return output
    end = output.find(gbnf, start)
    end = end + len(gbnf) + 1 if end >= 0 else len(output)
    return output[:start] + output[end:]


def _parse_message(output: str) -> str:
    first = output.strip().split("\n\n", 1)[0].splitlines()
    text = first[0] if first else ""
    text = text.removeprefix("parse: error parsing grammar: ").strip() or "llama.cpp could not parse it"
    log.info("a grammar was refused: %s", text)
    return text[:300]
