"""Log-probabilities of the sampled tokens, for the requests that ask for them.

The model's own distribution, before any sampling stage (penalties, bias, top-k,
temperature, grammar) touched it, as llama-server reports it: log softmax over
the whole vocabulary. Computed only for a sequence whose request set `logprobs`,
from a copy of its logits taken before sampling changes them in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class TokenLogprob:
    """One sampled token: its bytes, its log-probability, and the `top` most likely at its place
    as (token, bytes, log-probability), most likely first."""

    token: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()


class Before:
    """What is read from a row of logits before sampling changes it."""

    __slots__ = ("raw", "lse", "top")

    def __init__(self, logits: np.ndarray, k: int) -> None:
        self.raw = logits.copy()
        peak = float(self.raw.max())
        # float32 exponentials summed in float64: within 1e-6 of an all-float64 computation.
        self.lse = peak + float(np.log(np.exp(self.raw - np.float32(peak)).sum(dtype=np.float64)))
        if k > 0:
            ids = np.argpartition(self.raw, -k)[-k:]
            self.top = ids[np.argsort(-self.raw[ids], kind="stable")]
        else:
            self.top = ids = np.empty(0, dtype=np.int64)

    def record(self, token: int, piece: Callable[[int], bytes]) -> TokenLogprob:
        top = tuple((int(t), piece(int(t)), float(self.raw[t]) - self.lse) for t in self.top)
        return TokenLogprob(token, piece(token), float(self.raw[token]) - self.lse, top)
