"""Per-sequence sampling, text assembly and the value types of the batch decoder.

Each sequence in a batch owns a llama.cpp sampler chain (its own temperature,
top-p, seed...) and a `TextAssembler` that turns sampled token pieces into
UTF-8-safe text deltas while holding back anything that could still become a
stop string. The settings, events and statistics the decoder exchanges with its
caller live here too, so `batching` holds only the decode loop.
"""

from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field, replace

import llama_cpp.llama_cpp as lc

# Seed used when a request gives none: llama.cpp's "pick a random seed".
RANDOM_SEED = lc.LLAMA_DEFAULT_SEED


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

    def __post_init__(self) -> None:
        # Lists arrive from JSON; a tuple keeps the dataclass hashable and frozen.
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")


def build_sampler_chain(params: SamplingParams, n_vocab: int) -> int:
    """A new llama.cpp sampler chain for `params`; free it with `free_sampler_chain`.

    The order follows llama.cpp's common defaults (penalties, top-k, top-p,
    min-p, temperature, then the random draw), so one request samples the same
    here as under llama-server with the same settings.
    """
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    stages = []
    if params.repeat_penalty != 1.0 and params.repeat_last_n != 0:
        stages.append(lc.llama_sampler_init_penalties(
            n_vocab, params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
    if params.temperature <= 0:
        stages.append(lc.llama_sampler_init_greedy())
    else:
        seed = RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        if params.top_k > 0:
            stages.append(lc.llama_sampler_init_top_k(params.top_k))
        stages.append(lc.llama_sampler_init_top_p(params.top_p, 1))
        stages.append(lc.llama_sampler_init_min_p(params.min_p, 1))
        stages.append(lc.llama_sampler_init_temp(params.temperature))
        stages.append(lc.llama_sampler_init_dist(seed))
    for stage in stages:  # the chain takes ownership of each stage
        lc.llama_sampler_chain_add(chain, stage)
    return chain


def free_sampler_chain(chain: int | None) -> None:
    if chain:
        lc.llama_sampler_free(chain)


class TextAssembler:
    """Turns token pieces (bytes) into text deltas, honouring stop strings.

    A token may end in the middle of a multi-byte character: the incremental
    decoder keeps those bytes until the character is complete. Text that could
    be the beginning of a stop string is held back until it either completes
    the stop string (then the stream ends before it) or cannot any more.
    """

    __slots__ = ("_utf8", "_stops", "_held", "_longest")

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = stops
        self._held = ""
        self._longest = max((len(s) for s in stops), default=0)

    def feed(self, piece: bytes) -> tuple[str, bool]:
        """Returns (text safe to emit now, whether a stop string was hit)."""
        text = self._utf8.decode(piece)
        if not self._stops:
            return text, False
        buf = self._held + text
        hit = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if hit >= 0:
            self._held = ""
            return buf[:hit], True
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep], False

    def flush(self) -> str:
        """Whatever is held back, at the end of a stream that did not stop on a string."""
        text, self._held = self._held + self._utf8.decode(b"", final=True), ""
        return text

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of `buf` that begins some stop string."""
        for k in range(min(len(buf), self._longest - 1), 0, -1):
            tail = buf[-k:]
            if any(s.startswith(tail) for s in self._stops):
                return k
        return 0


# --- decoder settings ---------------------------------------------------------------
KV_TYPES = {"f32": lc.GGML_TYPE_F32, "f16": lc.GGML_TYPE_F16, "bf16": 30,
            "q8_0": lc.GGML_TYPE_Q8_0, "q5_1": lc.GGML_TYPE_Q5_1, "q5_0": lc.GGML_TYPE_Q5_0,
            "q4_1": lc.GGML_TYPE_Q4_1, "q4_0": lc.GGML_TYPE_Q4_0, "iq4_nl": lc.GGML_TYPE_IQ4_NL}
# (30 is GGML_TYPE_BF16, which the bindings do not export.)
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}


@dataclass(frozen=True)
class DecoderConfig:
    """How the shared context is built. The KV cache holds n_parallel * n_ctx_per_seq cells."""

    n_parallel: int = 4
    n_ctx_per_seq: int = 4096   # the context one request gets, whatever the others do
    n_batch: int = 512          # most tokens in one llama_decode
    prefill_chunk: int = 128    # prompt tokens per step while other sequences decode
    n_threads: int = 2
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    kv_unified: bool = False    # False: each slot its own KV stream (llama-server's -np N default)
    prefix_cache: bool = True   # idle slots keep their tokens for prefix reuse
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.n_parallel < 1 or self.n_ctx_per_seq < 8 or self.n_batch < 1:
            raise ValueError("n_parallel, n_ctx_per_seq and n_batch must be positive")
        if self.n_batch < self.n_parallel:
            raise ValueError("n_batch must hold at least one token per slot")
        for name, table in (("flash_attn", FLASH_ATTN), ("type_k", KV_TYPES), ("type_v", KV_TYPES)):
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
    p.type_k, p.type_v = KV_TYPES[cfg.type_k], KV_TYPES[cfg.type_v]
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
class Delta:
    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int  # prompt tokens whose KV cells were reused, not recomputed


@dataclass(frozen=True)
class Timings:
    queued_ms: float   # waiting for a free slot
    prompt_ms: float   # slot granted -> first token (prefill, shared with other streams)
    generation_ms: float
    total_ms: float

    @classmethod
    def of(cls, seq) -> "Timings":
        start = seq.t_start or seq.t_end
        first = seq.t_first or seq.t_end
        ms = 1000.0
        return cls((start - seq.t_add) * ms, (first - start) * ms, (seq.t_end - first) * ms,
                   (seq.t_end - seq.t_add) * ms)


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # stop | length | cancelled | error
    usage: Usage
    timings: Timings


@dataclass(frozen=True)
class DecoderStats:
    """Counters for metrics and health; `snapshot` fills in the live values."""

    slots_total: int
    slots_busy: int = 0
    waiting: int = 0
    steps: int = 0
    tokens: int = 0            # tokens through llama_decode, prompt chunks included
    sequences_per_step: float = 0.0
    last_batch_tokens: int = 0
    last_batch_sequences: int = 0
    kv_cells_used: int = 0
    decode_seconds: float = 0.0

    @classmethod
    def empty(cls, n_slots: int) -> "_StatsCounter":
        return _StatsCounter(cls(n_slots))

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.steps if self.steps else 0.0


class _StatsCounter:
    """Mutable accumulator owned by the decode thread; readers get frozen snapshots."""

    __slots__ = ("base", "steps", "tokens", "seqs", "last_tokens", "last_seqs", "t0", "busy_s")

    def __init__(self, base: DecoderStats) -> None:
        self.base, self.steps, self.tokens, self.seqs = base, 0, 0, 0
        self.last_tokens = self.last_seqs = 0
        self.t0, self.busy_s = 0.0, 0.0

    def start(self) -> None:
        self.t0 = time.perf_counter()

    def record(self, n_tokens: int, n_seqs: int) -> None:
        self.steps += 1
        self.tokens += n_tokens
        self.seqs += n_seqs
        self.last_tokens, self.last_seqs = n_tokens, n_seqs
        self.busy_s += time.perf_counter() - self.t0

    def snapshot(self, busy: int, waiting: int, kv_cells: int) -> DecoderStats:
        return replace(self.base, slots_busy=busy, waiting=waiting, steps=self.steps,
                       tokens=self.tokens, sequences_per_step=self.seqs / max(self.steps, 1),
                       last_batch_tokens=self.last_tokens, last_batch_sequences=self.last_seqs,
                       kv_cells_used=kv_cells, decode_seconds=self.busy_s)
