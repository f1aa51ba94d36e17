"""Continuous-batching decoder: N sequences share one llama.cpp context and one set of weights.

The server's worker thread drives it: `add()` a tokenized prompt (any thread),
then call `step()` in a loop. Each step builds ONE `llama_batch` holding the next
token of every decoding sequence plus a chunk of waiting prompts (chunked
prefill, so a long prompt never stalls the streams already running), calls
`llama_decode` once, and samples every sequence with its own sampler chain.
Sequences join and leave between steps. An idle slot keeps the tokens of its
last request in its KV cache, so a new prompt that shares their prefix (same
system prompt, earlier turns of a conversation) reuses those cells; a RAM
prompt cache keeps the states slots gave up (server/engine/promptcache.py).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import llama_cpp.llama_cpp as lc
import numpy as np
from llama_cpp import _internals

from server.engine import invariance, stepplan
from server.engine.constraints.grammar import Candidates, LlamaGrammar
from server.engine.constraints.guide import guide
from server.engine.constraints.sampler import ConstrainedSampler, GrammarStuck
from server.engine.constraints.vocab_index import VocabIndex
from server.engine.decoder_types import (
    DecodeError,
    DecoderConfig,
    DecoderStats,
    Ended,
    Event,
    PromptTooLongError,
)
from server.engine.logprobs import Before
from server.engine.model_facts import ModelFacts
from server.engine.opening import open_model
from server.engine.promptcache import PromptCache
from server.engine.request import Delta, SamplingParams
from server.engine.sampling import (
    build_sampler_chain,
    is_greedy,
)
from server.engine.sequence import DECODING, DONE, EOG, PREFILL, Pieces, Sequence
from server.engine.slots import SlotTable
from server.engine.speculation.speculator import Guide, Speculator
from server.engine.token_flow import TokenFlow
from server.engine.tokens.tokenizing import tokenize_whole

log = logging.getLogger(__name__)
STUCK = -1  # what a verified row gives when nothing fits the grammar: never a drafted token

__all__ = [
    "BatchDecoder",
    "Sequence",
    "SamplingParams",
    "DecoderConfig",
    "Delta",
    "Ended",
    "DecodeError",
    "PromptTooLongError",
]


class BatchDecoder(ModelFacts, TokenFlow):
    """One model, one context with `n_parallel` sequence slots; see the module docstring.
    What it knows of the model: server/engine/model_facts.py; what a sampled token does:
    server/engine/token_flow.py; opening the model: server/engine/opening.py.

    Threads: add, cancel, stats and the slot counts may be used from any thread;
    step, clear_cache, kv_cells_used and close only from the one thread that steps,
    because llama.cpp's context is not thread-safe.
    """

    def __init__(
        self,
        model: _internals.LlamaModel,
        ctx: _internals.LlamaContext,
        cfg: DecoderConfig,
        speculator: Speculator | None = None,
    ) -> None:
        self.cfg, self._model, self._ctx = cfg, model, ctx
        self._vocab, self._c = model.vocab, ctx.ctx
        self._mem = lc.llama_get_memory(self._c)
        self._n_vocab = model.n_vocab()
        self._n_swa = lc.llama_model_n_swa(model.model)
        self._batch = _internals.LlamaBatch(n_tokens=cfg.n_batch, embd=0, n_seq_max=1)
        b = self._batch.batch
        # numpy views over the batch arrays: prompt chunks are written as slices.
        self._tok = np.ctypeslib.as_array(b.token, shape=(cfg.n_batch,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(cfg.n_batch,))
        self._logits = np.ctypeslib.as_array(b.logits, shape=(cfg.n_batch,))
        np.ctypeslib.as_array(b.n_seq_id, shape=(cfg.n_batch,))[:] = 1
        self._seq_ids = [b.seq_id[i] for i in range(cfg.n_batch)]
        self._pieces = Pieces(self._vocab)
        ram = PromptCache(self._c, cfg.cache_ram_mib << 20) if cfg.cache_ram_mib else None
        self._table = SlotTable(self._mem, cfg.n_parallel, self._n_swa, cfg.prefix_cache, ram)
        self._slots = self._table.slots
        self._inbox: collections.deque[tuple[str, Sequence]] = collections.deque()  # (op, Sequence) from any thread
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._ids = itertools.count(1)
        self._stats = DecoderStats.empty(cfg.n_parallel)
        self._memory = (0, 0, 0, 0, 0 if self._table.ram is None else self._table.ram.limit)  # see _read_memory
        self._eog: list[int] | None = None  # see _eog_tokens
        self._candidates: Candidates | None = None  # the whole vocabulary's, for constrained sampling
        self._index: VocabIndex | None = None  # see vocab_index_
        self._index_lock = threading.Lock()
        self._spec = speculator  # speculative decoding (server/engine/speculation/speculator.py), None when off
        self._invariant = invariance.applies(cfg)  # batch-invariant kernels (server/engine/invariance.py)
        self._feeds: list[stepplan.Feed] = []
        self._out: np.ndarray | None = None  # the step's logits: TokenFlow._logits_row
        # With layers on a device, llama_decode returns once the step is queued there, and the
        # device computes while this thread goes on until it reads the logits: `on_launched`
        # (the engine's) runs in that time.
        self.asynchronous = cfg.n_gpu_layers != 0 and bool(lc.llama_supports_gpu_offload())
        self.on_launched: Callable[[], None] | None = None
        self._out_rows = np.zeros(0, dtype=np.int64)

    @classmethod
    def load(cls, model_path: str | Path, **settings: Any) -> "BatchDecoder":
        """Load the weights once and create the shared context (settings: DecoderConfig fields)."""
        return cls(*open_model(model_path, DecoderConfig(**settings)))

    # --- joining and leaving (thread-safe) ------------------------------------------
    def add(self, prompt: list[int], params: SamplingParams, on_event: Callable[[Event], None]) -> Sequence:
        """Queue a request; it joins the batch at the next step with a free slot."""
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.cfg.n_ctx_per_seq:
            raise PromptTooLongError(len(prompt), self.cfg.n_ctx_per_seq)
        seq = Sequence(next(self._ids), list(prompt), params, on_event)
        self._inbox.append(("add", seq))
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Stop `seq` at the start of the next step and free its KV cells."""
        seq.cancel_requested = True
        self._inbox.append(("cancel", seq))

    @property
    def free_slots(self) -> int:
        return self._table.free_count()

    @property
    def active(self) -> int:
        return self.cfg.n_parallel - self.free_slots

    @property
    def waiting(self) -> int:
        # Inbox entries not yet drained count too (a cancel among them overcounts by one
        # for at most a step); len() of a deque is safe from any thread.
        return len(self._waiting) + len(self._inbox)

    @property
    def idle(self) -> bool:
        return not self._inbox and not self._waiting and self.free_slots == self.cfg.n_parallel

    def kv_cells_used(self) -> int:
        """KV cells holding tokens, over all slots (idle slots keep their prefix cache)."""
        return self._table.cells_used()

    def stats(self) -> DecoderStats:
        """Counters for health and metrics; safe from any thread (KV use as of the last step)."""
        stats = self._stats.snapshot(self.active, self.waiting, *self._memory)
        if self._spec is None:
            return stats
        kinds = tuple(
            (name, c.offered, c.refused, c.probes, c.drafts, c.drafted, c.kept)
            for name, c in sorted(self._spec.by_kind.copy().items())  # copy(): one atomic read of the dict
        )
        return replace(stats, draft_tokens=self._spec.drafted, draft_accepted=self._spec.accepted, draft_by_kind=kinds)

    def clear_cache(self) -> None:
        """Drop the prefix caches of idle slots (all their KV cells)."""
        self._table.clear_idle()
        self._read_memory()

    # --- the decode loop ------------------------------------------------------------
    def step(self) -> int:
        """One llama_decode over all active sequences; returns the batch size (0 when idle)."""
        self._drain_inbox()
        self._admit()
        n = self._fill_batch()
        if n:
            self._decode(n)
        self._read_memory()
        return n

    def _read_memory(self) -> None:
        """KV cells used, and the RAM prompt cache's prompts, bytes, hits and limit: read here,
        on the stepping thread, never from another one."""
        ram = self._table.ram  # `is None`, not falsiness: an empty cache has len() 0 but still counts hits
        ram_use = (0, 0, 0, 0) if ram is None else (len(ram), ram.bytes, ram.hits, ram.limit)
        self._memory = (self.kv_cells_used(), *ram_use)

    def _decode(self, n: int) -> None:
        self._stats.start()
        t0 = time.perf_counter()
        invariance.use(self._invariant)
        self._out = None  # read again after this decode
        rc = lc.llama_decode(self._c, self._batch.batch)
        if rc == 1 and self._table.evict_idle():  # unified KV: idle caches may fill it
            rc = lc.llama_decode(self._c, self._batch.batch)
        if rc != 0:
            for f in self._feeds:
                self._finish(f.seq, "error")
            raise DecodeError(f"llama_decode failed (code {rc})")
        if self.on_launched is not None:
            self.on_launched()
        for f in self._feeds:
            self._after_decode(f)
        if self._spec is not None:  # the whole step: on a device the rows' sampling is most of it
            self._spec.observe(n, time.perf_counter() - t0)
        self._stats.record(n, len(self._feeds))

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Step until every queued sequence has finished; returns the number of steps."""
        for i in range(max_steps):
            if self.idle:
                return i
            self.step()
        raise DecodeError(f"still busy after {max_steps} steps")

    def _drain_inbox(self) -> None:
        while self._inbox:
            op, seq = self._inbox.popleft()
            if op == "add" and not seq.cancel_requested:
                self._waiting.append(seq)
            elif op == "cancel" or seq.cancel_requested:
                if seq in self._waiting:
                    self._waiting.remove(seq)
                if seq.state != DONE:
                    self._finish(seq, "cancelled")

    def _admit(self) -> None:
        """Give waiting sequences free slots, reusing the longest cached prefix."""
        while self._waiting and self.free_slots:
            seq = self._waiting.popleft()
            slot, keep = self._table.assign(seq, seq.prompt)
            seq.slot, seq.n_past, seq.n_cached, seq.state = slot, keep, keep, PREFILL
            seq.t_start = time.perf_counter()
            if seq.params.grammar is not None:
                seq.constraint = self._constrained(seq.params)
            else:  # greedy sequences need no chain: see sampling.greedy_token
                banned = self._eog_tokens() if seq.params.ignore_eos else None
                seq.chain = None if is_greedy(seq.params) else build_sampler_chain(seq.params, self._n_vocab, banned)
            if self._spec is not None:  # every request may draft: verification samples as plain decoding does
                seq.spec = self._spec.begin(slot.id, seq.prompt, sampled=not is_greedy(seq.params))

    def _constrained(self, params: SamplingParams) -> ConstrainedSampler:
        """The sampler of a sequence with a grammar. Its drafts are verified without taking anything
        back: each drafted row is sampled after the grammar accepted the tokens kept before it,
        and a drafted token the grammar refuses is never the sampled one, so the draft ends there."""
        if self._candidates is None:
            self._candidates = Candidates(self._n_vocab)
        assert params.grammar is not None  # only constrained requests come here
        grammar = LlamaGrammar(self._vocab, params.grammar)
        eog = self._model.token_eos() if self._model.token_eos() >= 0 else self._eog_tokens()[0]
        index = self.vocab_index()
        return ConstrainedSampler(grammar, params, self._n_vocab, eog, self._pieces, self._candidates, index)

    def _fill_batch(self) -> int:
        """Write this step's rows into the batch (which rows: server/engine/stepplan.py)."""
        running = [s.seq for s in self._slots if s.seq is not None]
        self._plan_drafts(running)
        for seq in running:
            seq.i_batch = -1
        cfg = self.cfg
        self._feeds = feeds = stepplan.plan(
            running, cfg.n_batch, cfg.prefill_chunk, equal_rows=not cfg.kv_unified, n_ctx=cfg.n_ctx_per_seq
        )
        n = 0
        for f in feeds:
            seq, k = f.seq, len(f.tokens)
            assert seq.slot is not None  # every running sequence holds one
            end = n + k
            self._tok[n:end] = f.tokens
            self._pos[n:end] = np.arange(f.pos, f.pos + k, dtype=np.int32)
            self._logits[n:end] = 0
            last = end - f.pad  # the rows after it pad the step (stepplan.Feed.pad)
            self._logits[last - f.n_out : last] = 1
            for i in range(n, end):
                self._seq_ids[i][0] = seq.slot.id
            if f.n_out:
                seq.i_batch = last - f.n_out
            n = end
        self._batch.batch.n_tokens = n
        return n

    def _plan_drafts(self, running: list[Sequence]) -> None:
        """Drafts for this step's decoding sequences (none while a prompt is being evaluated:
        the batch is busy already)."""
        if self._spec is None:
            return
        decoding = [s for s in running if s.state == DECODING]
        keyed = [(s.slot.id, s) for s in decoding if s.spec is not None and s.slot is not None]
        if any(s.state == PREFILL for s in running):
            keyed = []
        candidates = [(key, s.spec, [*s.prompt, *s.tokens], self._draft_room(s)) for key, s in keyed if s.spec]
        for s in decoding:
            if s.spec is not None:
                s.spec.draft = ()
        guides = {key: self._guide(seq.constraint) for key, seq in keyed if seq.constraint is not None}
        self._spec.plan(candidates, len(decoding), guides)
        if not self.cfg.kv_unified:  # every decoding sequence gets the same rows: stepplan.plan
            self._spec.equalize([s.spec for s in decoding if s.spec is not None], len(decoding))

    def _guide(self, constraint: ConstrainedSampler) -> Guide:
        """What the grammar makes of a draft: cut where it refuses, extended by what it forces."""
        return lambda draft, n_max: guide(constraint, draft, n_max, self._tokenize_bytes)

    def _tokenize_bytes(self, data: bytes) -> list[int]:
        return tokenize_whole(self._vocab, data, False, False)

    def _draft_room(self, seq: Sequence) -> int:
        """How many drafted tokens `seq` could still use: answer length and context left."""
        return min(seq.params.max_tokens - seq.n_generated - 1, self.cfg.n_ctx_per_seq - seq.n_past - 2)

    def _after_decode(self, feed: stepplan.Feed) -> None:
        seq = feed.seq
        if seq.state == DECODING and seq.spec is not None and seq.spec.draft:
            return self._after_verify(seq, feed)
        assert seq.slot is not None
        seq.slot.cached.extend(feed.tokens[: feed.real])
        seq.n_past = feed.pos + feed.real
        if feed.pad:  # the padding's cells: nothing of the sequence's
            lc.llama_memory_seq_rm(self._mem, seq.slot.id, seq.n_past, -1)
        if seq.i_batch >= 0:
            try:
                token = self._sample(seq)
            except GrammarStuck as exc:
                log.warning("sequence %d ends: %s", seq.id, exc)
                return self._finish(seq, "stop")
            self._on_token(seq, token)

    def _after_verify(self, seq: Sequence, feed: stepplan.Feed) -> None:
        """Keep the longest prefix of `seq`'s draft the target agrees with, plus the target's
        own next token; drop the rejected draft's KV cells."""
        slot, spec, speculator = seq.slot, seq.spec, self._spec
        assert slot is not None and spec is not None and speculator is not None  # only called with a draft
        base = feed.pos + feed.real - feed.n_out  # the next token's position
        slot.cached.extend(feed.tokens[: feed.real - feed.n_out])  # rows recomputed before it
        draft, befores = spec.draft, list[Before | None]()

        def choose(i: int, kept: list[int]) -> int:
            try:
                token = self._sample(seq, seq.i_batch + i, kept)
            except GrammarStuck as exc:
                log.warning("sequence %d ends: %s", seq.id, exc)
                token = STUCK
            befores.append(seq.before)  # each row's log-probabilities, for the token chosen from it
            return token

        out = speculator.accept(spec, choose, lambda token: self._pieces(token) is EOG)
        kept = len(out) - 1
        if kept < len(draft) or feed.pad:  # the refused draft's cells and the padding's
            lc.llama_memory_seq_rm(self._mem, slot.id, base + 1 + kept, -1)
        slot.cached.append(seq.next_token)
        slot.cached.extend(draft[:kept])
        seq.n_past = base + 1 + kept
        for token, before in zip(out, befores):
            seq.before = before
            if token == STUCK:
                return self._finish(seq, "stop")
            self._on_token(seq, token)
            if seq.state == DONE:
                return

    def close(self) -> None:
        for s in self._slots:
            if s.seq is not None:
                self._free_samplers(s.seq)
        self._batch.close()
        self._ctx.close()
        self._model.close()
