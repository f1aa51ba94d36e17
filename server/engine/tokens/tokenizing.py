"""Text -> token ids through llama.cpp's tokenizer, in time linear in the text.

llama_tokenize first splits the text at special-token texts ("<|im_start|>") into a linked
list of fragments, and for each match it counts its way along that list from the head
(`std::distance` in tokenizer_st_partition): k markers cost about k²/2 steps, so 50,000
"<|im_start|>" took seconds, in llama-server too. llama-cpp-python then called it twice
once a text had more tokens than the model's training context (the first buffer was that
size). Here a long text is tokenized in segments of about SEGMENT_BYTES, one call each,
with a buffer no answer can overflow; a segment ends only where a cut cannot change the
answer, so the ids are exactly llama.cpp's for the whole text (tests/server/test_tokenizing.py
compares them). A cut goes just after an occurrence of a special text M such that
  - M is one llama.cpp splits at in this mode (with special tokens parsed, or not),
  - no other occurrence of any special text overlaps this one (so it is matched as a
    token in the whole text, and no match crosses the cut),
  - where some token of the vocabulary strips whitespace beside its matches (lstrip,
    rstrip), M neither starts nor ends with whitespace and the next character is not
    whitespace, so that no stripping reaches across the cut.
Then the fragments on each side are those of the whole text, and every tokenizer type
tokenizes fragments independently (SentencePiece's space prefix follows a special token
at the start of a segment as it does in the whole text). Where no such place comes within
SEARCH_BYTES of a segment's size, the segment grows: never more calls than segments.
"""

from __future__ import annotations

from collections import defaultdict

import llama_cpp.llama_cpp as lc

SEGMENT_BYTES = 4096
SEARCH_BYTES = 512  # how far past a segment's size a cut is looked for, before trying further on
LONG = SEGMENT_BYTES + SEARCH_BYTES  # texts up to this long are one call
_SPECIAL = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_USER_DEFINED | lc.LLAMA_TOKEN_ATTR_UNKNOWN
_NOT_PARSED = lc.LLAMA_TOKEN_ATTR_CONTROL | lc.LLAMA_TOKEN_ATTR_UNKNOWN  # skipped unless special is parsed
_STRIPS = lc.LLAMA_TOKEN_ATTR_LSTRIP | lc.LLAMA_TOKEN_ATTR_RSTRIP
_WHITESPACE = frozenset(b" \t\n\r\v\f")


class SpecialTexts:
    """The texts of a vocabulary's special tokens, indexed to find occurrences at a place."""

    def __init__(self, vocab: object) -> None:
        self.every: set[bytes] = set()  # every special text: what an occurrence may overlap
        self.parsed: set[bytes] = set()  # split at with special tokens parsed
        self.plain: set[bytes] = set()  # split at even without (user-defined ones)
        self.strips = False  # some token strips whitespace beside its matches: then cuts keep off it
        for token in range(lc.llama_vocab_n_tokens(vocab)):
            attr = lc.llama_vocab_get_attr(vocab, token)
            self.strips = self.strips or bool(attr & _STRIPS)
            if not attr & _SPECIAL:
                continue
            text = lc.llama_vocab_get_text(vocab, token) or b""
            if text:
                self.every.add(text)
                self.parsed.add(text)
                if not attr & _NOT_PARSED:
                    self.plain.add(text)
        self.longest = max(map(len, self.every), default=0)
        lengths = defaultdict(set)  # first byte -> lengths of the special texts starting with it
        for text in self.every:
            lengths[text[0]].add(len(text))
        self._lengths = {first: sorted(ls) for first, ls in lengths.items()}
        adds = lc.llama_vocab_get_add_eos(vocab) or lc.llama_vocab_get_add_sep(vocab)
        self.adds_at_end = bool(adds)  # add_special puts a token after the text too

    def cut_after(self, text: bytes, start: int, stop: int, parse_special: bool) -> int | None:
        """The first place in text[start:stop] a segment may end (see the module docstring)."""
        splitting = self.parsed if parse_special else self.plain
        for a in range(start, min(stop, len(text))):
            for size in self._lengths.get(text[a], ()):
                end = a + size
                if end >= len(text) or text[a:end] not in splitting:
                    continue
                if self.strips and any(text[i] in _WHITESPACE for i in (a, end - 1, end)):
                    continue
                if self._alone(text, a, end):
                    return end
        return None

    def _alone(self, text: bytes, a: int, end: int) -> bool:
        """Whether no occurrence of a special text but text[a:end] itself overlaps text[a:end]."""
        for s in range(max(0, a - self.longest + 1), end):
            for size in self._lengths.get(text[s], ()):
                if s + size > a and (s, size) != (a, end - a) and text[s : s + size] in self.every:
                    return False
        return True


def tokenize(vocab: object, text: bytes, add_special: bool, parse_special: bool, specials: SpecialTexts) -> list[int]:
    """llama.cpp's token ids for `text`, in segments where that changes nothing (module docstring)."""
    if len(text) <= LONG or (add_special and specials.adds_at_end) or not specials.every:
        return tokenize_whole(vocab, text, add_special, parse_special)
    ids: list[int] = []
    start, target = 0, SEGMENT_BYTES
    while start < len(text):
        cut = specials.cut_after(text, target, target + SEARCH_BYTES, parse_special) if target < len(text) else None
        if cut is None and target < len(text):
            target += SEGMENT_BYTES  # nowhere to cut here: the segment grows
            continue
        end = cut if cut is not None else len(text)
        ids += tokenize_whole(vocab, text[start:end], add_special and start == 0, parse_special)
        start, target = end, end + SEGMENT_BYTES
    return ids


def tokenize_whole(vocab: object, text: bytes, add_special: bool, parse_special: bool) -> list[int]:
    """One llama_tokenize call. Each token stands for at least one byte, but for those added
    around the text and SentencePiece's space before each fragment: twice the bytes is room."""
    room = 2 * len(text) + 8
    ids = (lc.llama_token * room)()
    n = lc.llama_tokenize(vocab, text, len(text), ids, room, add_special, parse_special)
    if n < 0:  # not expected; llama.cpp says how many it needs
        room = -n
        ids = (lc.llama_token * room)()
        n = lc.llama_tokenize(vocab, text, len(text), ids, room, add_special, parse_special)
        if n < 0:
            raise RuntimeError(f"llama_tokenize needed {-n} tokens of room and still failed")
    return list(ids[:n])
