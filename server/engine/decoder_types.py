"""Value types the batch decoder exchanges with its caller: settings, events, errors, statistics.

SamplingParams is the engine request's (server/engine/request.py), re-exported here.

Nothing here touches llama.cpp's state; `context_params` only fills in the
struct the context is created from. Kept apart from the decode loop so the
engine (and tests) can import the types without reading the loop.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, replace
from typing import Union

import llama_cpp.llama_cpp as lc

from server.engine.request import Delta
from server.engine.request import SamplingParams as SamplingParams  # re-exported
from server.settings import KV_CACHE_TYPES

# --- decoder settings ---------------------------------------------------------------
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


@dataclass(frozen=True)
class DecoderConfig:
    """How the shared context is built. The KV cache holds n_parallel * n_ctx_per_seq cells."""

    n_parallel: int = 4
    n_ctx_per_seq: int = 4096  # the context one request gets, whatever the others do
    n_batch: int = 512  # most tokens in one llama_decode
    prefill_chunk: int = 128  # prompt tokens per step while other sequences decode
    n_threads: int = 2
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    main_gpu: int = 0
    tensor_split: tuple[float, ...] | None = None
    use_mlock: bool = False
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    kv_unified: bool = False  # False: each slot its own KV stream (llama-server's -np N default)
    prefix_cache: bool = True  # idle slots keep their tokens for prefix reuse
    cache_ram_mib: int = 2048  # RAM for prompt states that slots gave up (0: none)
    batch_invariant: bool = True  # CPU: a token's logits never depend on the batch (server/engine/invariance.py)
    speculative: str = "off"  # off | ngram | draft (a draft model, draft_model)
    draft_max: int = 16  # most tokens drafted for one sequence in one step
    draft_step_tokens: int = 24  # most tokens in a step with drafts (decode tokens included)
    draft_model: str | None = None
    draft_n_gpu_layers: int = 0
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.n_parallel < 1 or self.n_ctx_per_seq < 8 or self.n_batch < 1:
            raise ValueError("n_parallel, n_ctx_per_seq and n_batch must be positive")
        if self.cache_ram_mib < 0:
            raise ValueError("cache_ram_mib must be >= 0")
        if self.n_batch < self.n_parallel:
            raise ValueError("n_batch must hold at least one token per slot")
        if self.speculative not in ("off", "ngram", "draft") or (self.speculative == "draft") != bool(self.draft_model):
            raise ValueError("speculative must be off, ngram, or draft with a draft_model")
        if self.draft_max < 1 or self.draft_step_tokens < 2:
            raise ValueError("draft_max must be >= 1 and draft_step_tokens >= 2")
        for name, table in (("flash_attn", FLASH_ATTN), ("type_k", KV_CACHE_TYPES), ("type_v", KV_CACHE_TYPES)):
            if getattr(self, name) not in table:
                raise ValueError(f"{name} must be one of {sorted(table)}")


def context_params(cfg: DecoderConfig) -> "lc.llama_context_params":
    p = lc.llama_context_default_params()
    p.n_ctx = cfg.n_parallel * cfg.n_ctx_per_seq
    p.n_batch = cfg.n_batch
    p.n_ubatch = min(cfg.n_batch, 512)
    p.n_seq_max = cfg.n_parallel
    p.n_threads = cfg.n_threads
    p.n_threads_batch = cfg.n_threads_batch or cfg.n_threads
    p.flash_attn_type = FLASH_ATTN[cfg.flash_attn]
    p.type_k, p.type_v = KV_CACHE_TYPES[cfg.type_k].ggml, KV_CACHE_TYPES[cfg.type_v].ggml
    p.kv_unified = cfg.kv_unified
    return p


# --- errors and events ------------------------------------------------------------
class DecodeError(RuntimeError):
    """llama.cpp could not decode a batch, or the context cannot be built as asked."""


class PromptTooLongError(ValueError):
    def __init__(self, n_prompt: int, n_ctx: int) -> None:
        super().__init__(f"prompt has {n_prompt} tokens; the context per request is {n_ctx}")
        self.n_prompt, self.n_ctx = n_prompt, n_ctx


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int  # sampled tokens, the end-of-generation token excluded
    cached_tokens: int  # prompt tokens whose KV cells were reused, not recomputed


@dataclass(frozen=True)
class Timings:
    queued_ms: float  # waiting for a free slot
    prompt_ms: float  # slot granted -> first token (prefill, shared with other streams)
    generation_ms: float
    total_ms: float
    tokens_per_second: float  # samples after the first / (last sample - first sample)
    draft_tokens: int = 0  # speculative decoding: tokens drafted for this sequence, and how many were kept
    draft_accepted: int = 0


@dataclass(frozen=True)
class Ended:
    """A sequence's last event in the decoder (the engine turns it into a request's Done)."""

    finish_reason: str  # stop | length | cancelled | error
    usage: Usage
    timings: Timings


# What a sequence's `on_event` receives: Delta events, then exactly one Ended.
Event = Union[Delta, Ended]

# --- statistics -------------------------------------------------------------------
# Upper bounds ("le") of the per-step histograms: tokens in one llama_decode, and
# how many sequences shared it.
TOKENS_PER_STEP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
SEQUENCES_PER_STEP_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)


@dataclass(frozen=True)
class DecoderStats:
    """Counters for metrics and health; `snapshot` fills in the live values."""

    slots_total: int
    slots_busy: int = 0
    waiting: int = 0
    steps: int = 0
    tokens: int = 0  # tokens through llama_decode, prompt chunks included
    sequences: int = 0  # sum over steps of the sequences in the step
    sequences_per_step: float = 0.0
    last_batch_tokens: int = 0
    last_batch_sequences: int = 0
    kv_cells_used: int = 0
    prompt_cache_prompts: int = 0  # prompt states held in RAM (server/engine/promptcache.py)
    prompt_cache_bytes: int = 0
    prompt_cache_limit_bytes: int = 0  # the most it may hold (0: off)
    prompt_cache_hits: int = 0  # prompts that got a saved state back
    draft_tokens: int = 0  # speculative decoding: tokens drafted, and how many the target kept
    draft_accepted: int = 0
    # Per kind of guess (server/engine/speculation/speculator.py KindCount): (kind, offered, refused,
    # probes, drafts, drafted, kept), for the metrics and the speculative bench's per-kind figures.
    draft_by_kind: tuple[tuple[str, int, int, int, int, int, int], ...] = ()
    decode_seconds: float = 0.0
    tokens_histogram: tuple[int, ...] = ()  # per TOKENS_PER_STEP_BUCKETS, then +Inf (not cumulative)
    sequences_histogram: tuple[int, ...] = ()  # per SEQUENCES_PER_STEP_BUCKETS, then +Inf

    @classmethod
    def empty(cls, n_slots: int) -> "_StatsCounter":
        return _StatsCounter(cls(n_slots))

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0


class _StatsCounter:
    """Mutable accumulator owned by the decode thread; readers get frozen snapshots."""

    __slots__ = ("base", "steps", "tokens", "seqs", "last_tokens", "last_seqs", "t0", "busy_s", "tok_hist", "seq_hist")

    def __init__(self, base: DecoderStats) -> None:
        self.base, self.steps, self.tokens, self.seqs = base, 0, 0, 0
        self.last_tokens = self.last_seqs = 0
        self.t0, self.busy_s = 0.0, 0.0
        self.tok_hist = [0] * (len(TOKENS_PER_STEP_BUCKETS) + 1)
        self.seq_hist = [0] * (len(SEQUENCES_PER_STEP_BUCKETS) + 1)

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def record(self, n_tokens: int, n_seqs: int) -> None:
        self.steps += 1
        self.tokens += n_tokens
        self.seqs += n_seqs
        self.last_tokens, self.last_seqs = n_tokens, n_seqs
        self.tok_hist[bisect.bisect_left(TOKENS_PER_STEP_BUCKETS, n_tokens)] += 1
        self.seq_hist[bisect.bisect_left(SEQUENCES_PER_STEP_BUCKETS, n_seqs)] += 1
        self.busy_s += time.perf_counter() - self.t0

    def snapshot(
        self,
        busy: int,
        waiting: int,
        kv_cells: int,
        ram_prompts: int = 0,
        ram_bytes: int = 0,
        ram_hits: int = 0,
        ram_limit: int = 0,
    ) -> DecoderStats:
        return replace(
            self.base,
            slots_busy=busy,
            waiting=waiting,
            steps=self.steps,
            prompt_cache_prompts=ram_prompts,
            prompt_cache_bytes=ram_bytes,
            prompt_cache_limit_bytes=ram_limit,
            prompt_cache_hits=ram_hits,
            tokens=self.tokens,
            sequences=self.seqs,
            sequences_per_step=self.seqs / max(self.steps, 1),
            last_batch_tokens=self.last_tokens,
            last_batch_sequences=self.last_seqs,
            kv_cells_used=kv_cells,
            decode_seconds=self.busy_s,
            tokens_histogram=tuple(self.tok_hist),
            sequences_histogram=tuple(self.seq_hist),
        )
