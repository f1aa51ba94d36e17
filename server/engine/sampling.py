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


# OpenAI's convention: a bias of -100 bans the token outright (llama.cpp would only add -100).
BAN = -100.0


def bias_entries(params: SamplingParams, banned: list[int] | None = None) -> list[tuple[int, float]]:
    """(token, bias) pairs for llama.cpp's logit-bias stage: the request's, then `banned` tokens."""
    entries = [(t, float("-inf") if b <= BAN else float(b)) for t, b in params.logit_bias]
    return entries + [(t, float("-inf")) for t in banned or ()]


def apply_bias(logits: np.ndarray, entries: list[tuple[int, float]]) -> None:
    """What llama.cpp's logit-bias stage does, in place: add each bias to its token's logit."""
    for token, bias in entries:
        logits[token] += np.float32(bias)


def penalize(logits: np.ndarray, recent: list[int], params: SamplingParams) -> None:
    """What llama.cpp's penalties stage does, in place and in the same float32 arithmetic: each
    distinct token among the `recent` sampled ones has its logit divided by the repeat penalty
    (multiplied, when <= 0), then count * frequency_penalty + presence_penalty subtracted."""
    if not recent or not params.penalized:
        return
    ids, counts = np.unique(np.asarray(recent, dtype=np.int64), return_counts=True)
    values, p = logits[ids], np.float32(params.repeat_penalty)
    if params.repeat_penalty != 1.0:
        values = np.where(values <= 0, values * p, values / p)
    if params.frequency_penalty or params.presence_penalty:
        freq, present = np.float32(params.frequency_penalty), np.float32(params.presence_penalty)
        values = values - (counts.astype(np.float32) * freq + present)
    logits[ids] = values


def greedy_token(logits: np.ndarray, recent: list[int], params: SamplingParams | float) -> int:
    """The token llama.cpp's penalties + greedy chain picks, from a view of the logits.

    llama_sampler_sample first copies the whole vocabulary into a candidate array
    (about 1 ms per token for Gemma's 262k entries: a large share of a small model's
    step); greedy needs only an argmax, and the penalties touch only the recent
    tokens (see `penalize`). argmax keeps the first of equal maxima, as llama.cpp's
    greedy sampler does. `params` may be a bare repeat penalty.

    `logits` is this sequence's row of llama.cpp's output buffer, which the next
    decode overwrites and nothing else reads: the penalties are applied in place.
    """
    if not isinstance(params, SamplingParams):
        params = SamplingParams(repeat_penalty=params)
    best = int(logits.argmax())
    if not recent or not params.penalized:
        return best
    # Penalties that only lower scores leave a best token that is not recent the best (a recent
    # token tied with it comes later in the vocabulary: argmax took the first). A repeat penalty
    # below 1 or a negative presence/frequency penalty raises recent scores: no shortcut then.
    lowers_only = params.repeat_penalty >= 1.0 and params.frequency_penalty >= 0 and params.presence_penalty >= 0
    if lowers_only and best not in recent:
        return best
    penalize(logits, recent, params)
    return int(logits.argmax())


def build_sampler_chain(params: SamplingParams, n_vocab: int, banned: list[int] | None = None) -> int:
    """A new llama.cpp sampler chain for `params`; free it with `free_sampler_chain`.

    The order follows llama.cpp's common defaults (logit bias, penalties, top-k,
    top-p, min-p, temperature, then the random draw), so one request samples the
    same here as under llama-server with the same settings.
    """
    chain: int = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    stages = []
    entries = bias_entries(params, banned)  # banned: tokens never drawn (end-of-generation under ignore_eos)
    if entries:
        biases = (lc.llama_logit_bias * len(entries))(*entries)
        stages.append(lc.llama_sampler_init_logit_bias(n_vocab, len(entries), biases))
    if params.penalized:
        stages.append(
            lc.llama_sampler_init_penalties(
                n_vocab, params.repeat_last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
            )
        )
    stages += _draw_stages(params)
    for stage in stages:  # the chain takes ownership of each stage
        lc.llama_sampler_chain_add(chain, stage)
    return chain


def draw_chain(params: SamplingParams) -> int:
    """A chain of only the draw stages (no bias, no penalties: the caller applied those)."""
    chain: int = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    for stage in _draw_stages(params):
        lc.llama_sampler_chain_add(chain, stage)
    return chain


def _draw_stages(params: SamplingParams) -> list[object]:
    """The stages after the penalties: greedy, or top-k, top-p, min-p, temperature and the draw."""
    if params.temperature <= 0:
        return [lc.llama_sampler_init_greedy()]
    seed = RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    stages = [lc.llama_sampler_init_top_k(params.top_k)] if params.top_k > 0 else []
    return stages + [
        lc.llama_sampler_init_top_p(params.top_p, 1),
        lc.llama_sampler_init_min_p(params.min_p, 1),
        lc.llama_sampler_init_temp(params.temperature),
        lc.llama_sampler_init_dist(seed),
    ]


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
