"""Per-sequence sampling and text assembly for the batch decoder.

Each sequence in a batch owns a llama.cpp sampler chain (its own temperature,
top-p, seed...) and a `TextAssembler` that turns sampled token pieces into
UTF-8-safe text deltas while holding back anything that could still become a
stop string. The value types (SamplingParams among them) live in
server/engine/decoder_types.py.
"""

from __future__ import annotations

import codecs

import llama_cpp.llama_cpp as lc
import numpy as np

from server.engine.decoder_types import SamplingParams

# Seed used when a request gives none: llama.cpp's "pick a random seed".
RANDOM_SEED = lc.LLAMA_DEFAULT_SEED


def is_greedy(params: SamplingParams) -> bool:
    return params.temperature <= 0


def greedy_token(logits: np.ndarray, recent: list[int], penalty: float) -> int:
    """The token llama.cpp's penalties + greedy chain picks, from a view of the logits.

    llama_sampler_sample first copies the whole vocabulary into a candidate array
    (about 1 ms per token for Gemma's 262k entries: a large share of a small model's
    step); greedy needs only an argmax. The repeat penalty is llama.cpp's, in the same
    float32 arithmetic: each distinct token among the `recent` sampled ones has its
    logit divided by `penalty` (multiplied, when <= 0). argmax keeps the first of equal
    maxima, as llama.cpp's greedy sampler does.

    `logits` is this sequence's row of llama.cpp's output buffer, which the next
    decode overwrites and nothing else reads: the penalty is applied in place.
    """
    best = int(logits.argmax())
    if penalty == 1.0 or not recent:
        return best
    # A penalty never raises a score, so a best token that is not recent stays best
    # (a recent token tied with it comes later in the vocabulary: argmax took the first).
    if best not in recent:
        return best
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    values, p = logits[ids], np.float32(penalty)
    logits[ids] = np.where(values <= 0, values * p, values / p)
    return int(logits.argmax())


def build_sampler_chain(params: SamplingParams, n_vocab: int, banned: list[int] | None = None) -> int:
    """A new llama.cpp sampler chain for `params`; free it with `free_sampler_chain`.

    The order follows llama.cpp's common defaults (penalties, top-k, top-p,
    min-p, temperature, then the random draw), so one request samples the same
    here as under llama-server with the same settings.
    """
    chain: int = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    stages = []
    if banned:  # tokens that must never be drawn (end-of-generation under ignore_eos)
        biases = (lc.llama_logit_bias * len(banned))(*((t, float("-inf")) for t in banned))
        stages.append(lc.llama_sampler_init_logit_bias(n_vocab, len(banned), biases))
    if params.repeat_penalty != 1.0 and params.repeat_last_n != 0:
        stages.append(lc.llama_sampler_init_penalties(n_vocab, params.repeat_last_n, params.repeat_penalty, 0.0, 0.0))
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
        self._held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], False

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
