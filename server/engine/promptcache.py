"""Host-memory prompt cache: KV states of earlier prompts, kept in RAM for reuse.

A slot's KV cells hold one earlier prompt (and its answer) for prefix reuse. When
a new request takes the slot and keeps little of it, those cells would be lost,
so first their state is copied to RAM (`llama_state_seq_get_data`); a later
prompt that shares a longer prefix with a saved state than with any slot gets
that state copied back into its slot (`llama_state_seq_set_data`) instead of
recomputing it. Copying a state costs milliseconds; recomputing a prompt costs
seconds on a CPU. This is llama-server's prompt cache (`--cache-ram`), with its
rules: a restored entry leaves the cache (the slot holds it now), entries wholly
contained in a newer one are dropped, and the oldest go first past the size limit.

Like the slot table, it touches llama.cpp's context: stepping thread only.
"""

from __future__ import annotations

import collections
import ctypes
import mmap
from dataclasses import dataclass
from typing import Sequence

import llama_cpp.llama_cpp as lc
import numpy as np

# A saved state is restored only if the new prompt uses at least this share of it:
# restoring consumes the entry, and trimming most of it away would waste a long prompt.
MIN_KEEP = 0.25


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def state_buffer(size: int) -> np.ndarray:
    """`size` bytes in an anonymous mapping of their own, which goes back to the system the moment
    the entry is dropped. From malloc, states of every size made and dropped for hours fragment the
    heap, and the process keeps growing although the cache does not (a 60-minute soak: +52 MiB
    beside a full 512 MiB cache). Untouched pages cost nothing until llama.cpp writes them."""
    return np.frombuffer(mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS), dtype=np.uint8)


@dataclass(eq=False)
class Entry:
    tokens: tuple[int, ...]
    state: np.ndarray  # uint8: what llama_state_seq_get_data wrote

    def pointer(self) -> ctypes._Pointer[ctypes.c_uint8]:
        return self.state.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


class PromptCache:
    def __init__(self, ctx: object, limit_bytes: int) -> None:  # a llama_context pointer
        self._ctx, self.limit = ctx, limit_bytes
        self._entries: collections.deque[Entry] = collections.deque()  # oldest first
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def bytes(self) -> int:
        return sum(e.state.nbytes for e in self._entries)

    def save(self, seq_id: int, tokens: list[int]) -> bool:
        """Copy sequence `seq_id`'s cells (which hold exactly `tokens`) into the cache."""
        if not tokens or any(common_prefix(e.tokens, tokens) == len(tokens) for e in self._entries):
            return False  # nothing to save, or already held by a longer entry
        size = lc.llama_state_seq_get_size(self._ctx, seq_id)
        if not 0 < size <= self.limit:
            return False
        self._entries = collections.deque(e for e in self._entries if common_prefix(e.tokens, tokens) < len(e.tokens))
        self._make_room(size)
        try:
            entry = Entry(tuple(tokens), state_buffer(size))
        except (MemoryError, OSError):  # the machine has less to spare than the limit says: shrink it
            self.limit = int(0.4 * self.bytes)
            self._make_room(0)
            return False
        if lc.llama_state_seq_get_data(self._ctx, entry.pointer(), size, seq_id) != size:
            return False
        self._entries.append(entry)
        return True

    def _make_room(self, size: int) -> None:
        """Drop the oldest entries until `size` more bytes fit under the limit."""
        while self._entries and self.bytes + size > self.limit:
            self._entries.popleft()

    def take(self, prompt: list[int], have: int, usable: int) -> Entry | None:
        """Remove and return the entry sharing the longest prefix with `prompt`, if it beats
        the `have` tokens the slot already shares; at most `usable` tokens count."""
        best, best_n = None, have
        for e in self._entries:
            n = min(common_prefix(e.tokens, prompt), usable)
            if n > best_n and n >= MIN_KEEP * len(e.tokens):
                best, best_n = e, n
        if best is not None:
            self._entries.remove(best)
        return best

    def restore(self, entry: Entry, seq_id: int) -> bool:
        """Replace sequence `seq_id`'s cells with `entry`'s; False if llama.cpp refused
        (the sequence must then be cleared: it may be half-written)."""
        size = entry.state.nbytes
        ok: bool = lc.llama_state_seq_set_data(self._ctx, entry.pointer(), size, seq_id) == size
        self.hits += ok
        return ok

    def clear(self) -> None:
        self._entries.clear()
