"""KV-cache slots of the batch decoder: which sequence id holds which cells, and prefix reuse.

Slot i is llama.cpp sequence id i. A busy slot belongs to one request; an idle
slot keeps the tokens of its last request in its cells, so the next prompt
that starts the same way (same system prompt, earlier turns of a conversation)
is given that slot and only its new tail is computed. With a RAM prompt cache
(server/engine/promptcache.py), what a slot is about to lose is saved there first, and
a prompt that shares more with a saved state than with its slot gets that state
back. Everything here touches llama.cpp's memory, so it runs on the decoder's
stepping thread only, except `free_count`, which only reads Python fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import llama_cpp.llama_cpp as lc

from server.engine.promptcache import PromptCache, common_prefix

if TYPE_CHECKING:
    from server.engine.sequence import Sequence


@dataclass(eq=False)
class Slot:
    id: int
    cached: list[int] = field(default_factory=list)  # exactly the tokens this sequence id holds
    seq: Sequence | None = None  # the Sequence using it, None when idle


class SlotTable:
    def __init__(
        self, mem: object, n_parallel: int, n_swa: int, prefix_cache: bool, ram: PromptCache | None = None
    ) -> None:
        self._mem, self._n_swa, self.prefix_cache = mem, n_swa, prefix_cache
        self.ram = ram if prefix_cache else None
        self.slots = [Slot(i) for i in range(n_parallel)]

    def free_count(self) -> int:
        return sum(s.seq is None for s in self.slots)

    def busy(self) -> list[Slot]:
        return [s for s in self.slots if s.seq is not None]

    def assign(self, seq: Sequence, prompt: list[int]) -> tuple[Slot, int]:
        """A free slot for `prompt`, the one sharing the longest cached prefix (then the lowest
        id); returns it and how many prompt tokens it already holds.

        The lowest id keeps the running slots together: with a KV stream per slot, llama.cpp
        evaluates a step in one pass over the weights only over consecutive sequence ids, and
        one pass per run of them otherwise (server/engine/stepplan.py)."""
        slot = max((s for s in self.slots if s.seq is None), key=lambda s: (self._common_prefix(s, prompt), -s.id))
        if self.ram is not None:
            self._swap_in(slot, prompt)
        keep = self._reuse_prefix(slot, prompt)
        slot.seq = seq
        return slot, keep

    def release(self, slot: Slot, keep_cache: bool) -> None:
        slot.seq = None
        if not (keep_cache and self.prefix_cache):
            self.forget(slot)  # its cells are free for the next request at once

    def forget(self, slot: Slot) -> None:
        lc.llama_memory_seq_rm(self._mem, slot.id, -1, -1)
        slot.cached.clear()

    def clear_idle(self) -> None:
        for s in self.slots:
            if s.seq is None:
                self.forget(s)
        if self.ram is not None:
            self.ram.clear()

    def evict_idle(self) -> bool:
        """Drop idle prefix caches (a unified KV cache may need their cells); True if any."""
        idle = [s for s in self.slots if s.seq is None and s.cached]
        for s in idle:
            self.forget(s)
        return bool(idle)

    def cells_used(self) -> int:
        """KV cells holding tokens, over all slots (idle slots keep their prefix cache)."""
        return sum(self.cells_for(s) for s in self.slots)

    def cells_for(self, slot: Slot) -> int:
        """The positions `slot`'s sequence holds in the KV cache."""
        hi = lc.llama_memory_seq_pos_max(self._mem, slot.id)
        return hi - lc.llama_memory_seq_pos_min(self._mem, slot.id) + 1 if hi >= 0 else 0

    def _common_prefix(self, slot: Slot, prompt: list[int]) -> int:
        if not self.prefix_cache:
            return 0
        # The last prompt token is always decoded, for its logits.
        return min(common_prefix(slot.cached, prompt), len(prompt) - 1)

    def _swap_in(self, slot: Slot, prompt: list[int]) -> None:
        """Save what `slot` is about to lose to the RAM cache, and take a saved state that
        shares more with `prompt` than the slot does, if there is one."""
        assert self.ram is not None  # called only with a RAM cache
        have = self._common_prefix(slot, prompt)
        if slot.cached and have >= len(slot.cached) / 2:
            return  # it keeps most of what it holds (llama-server's rule): nothing to save
        self.ram.save(slot.id, slot.cached)
        entry = self.ram.take(prompt, have, len(prompt) - 1)
        if entry is None:
            return
        if self.ram.restore(entry, slot.id):
            slot.cached = list(entry.tokens)
        else:
            self.forget(slot)

    def _reuse_prefix(self, slot: Slot, prompt: list[int]) -> int:
        keep = self._common_prefix(slot, prompt)
        if keep and self._n_swa:
            # A sliding-window cache only keeps the last n_swa positions: the window
            # before `keep` must still be there, else recompute from the start.
            if lc.llama_memory_seq_pos_min(self._mem, slot.id) > max(0, keep - self._n_swa):
                keep = 0
        if keep == 0 or not lc.llama_memory_seq_rm(self._mem, slot.id, keep, -1):
            self.forget(slot)
            return 0
        del slot.cached[keep:]
        return keep
