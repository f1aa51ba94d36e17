"""Whether a draft pays for itself: the measured cost of a step against the tokens it should give.

Checking k drafted tokens adds k rows to a step. On a GPU, or a CPU reading a large
model, a step costs about the same for 1 row or 16 (the weights are read once), and
drafts are nearly free; on a CPU with a small model each row costs almost as much as
the step itself, and a draft that is half kept makes decoding slower. No constant
suits both, so the cost is measured: `StepCost` fits `seconds = a + b * rows` over
recent steps and keeps the time making a drafted token takes (nothing for prompt
lookup, a forward pass of the draft model for a draft model), and `best_length` drafts
as many tokens as give the step the most tokens per second, and none unless that beats
the step without a draft by a margin. A sequence's
drafted tokens are kept with probability `p` each (`Acceptance`, measured per
sequence), so k of them give p + p^2 + ... + p^k tokens on average, the first miss
ending the run.
"""

from __future__ import annotations

DECAY = 0.98  # each step's weight in the fit halves after ~35 steps: the load changes, the fit follows
MARGIN = 1.05  # a draft must promise 5% more tokens per second than the step without it


class StepCost:
    """Least-squares fit of a decode step's time on its rows, over recent steps of at most `max_rows`."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.n = self.sx = self.sy = self.sxx = self.sxy = 0.0
        self.per_draft_token = 0.0  # seconds the draft source takes per drafted token, recent average

    def drafted(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            self.per_draft_token = 0.8 * self.per_draft_token + 0.2 * seconds / tokens

    def observe(self, rows: int, seconds: float) -> None:
        if not 0 < rows <= self.max_rows:
            return
        d = DECAY
        self.n, self.sx, self.sy = self.n * d + 1, self.sx * d + rows, self.sy * d + seconds
        self.sxx, self.sxy = self.sxx * d + rows * rows, self.sxy * d + rows * seconds

    def line(self) -> tuple[float, float] | None:
        """(a, b) of seconds = a + b * rows, or None until steps of different sizes were seen."""
        var = self.n * self.sxx - self.sx * self.sx
        if self.n < 4 or var <= 1e-9 * max(1.0, self.n * self.sxx):
            return None
        b = (self.n * self.sxy - self.sx * self.sy) / var
        a = (self.sy - b * self.sx) / self.n
        if a <= 0:  # noise: every row costs, the fixed part is small
            a, b = 1e-6, self.sy / self.sx
        return a, max(b, 0.0)


class Acceptance:
    """The chance that a drafted token is kept: kept / tried, where the run of a draft stops at its
    first miss (that token is tried, the ones after it are not), over recent drafts."""

    def __init__(self, prior: float = 0.5, probe_every: int = 16) -> None:
        self.kept, self.tried = prior * 2, 2.0  # a prior worth two tokens
        self.probe_every, self._refused = probe_every, 0

    def update(self, drafted: int, kept: int) -> None:
        tried = kept + (1 if kept < drafted else 0)
        self.kept, self.tried = self.kept * 0.9 + kept, self.tried * 0.9 + tried
        self._refused = 0

    def probe(self) -> bool:
        """Called when a draft of this kind was refused: True every `probe_every`-th time in a row,
        so a kind judged not worth drafting is measured again now and then (its chance may have
        changed, or the load)."""
        self._refused += 1
        return self._refused % self.probe_every == 0

    @property
    def p(self) -> float:
        return self.kept / self.tried if self.tried else 0.0


def expected_kept(p: float, k: int) -> float:
    """Tokens kept on average from a k-token draft whose tokens are each kept with chance p."""
    return sum(p**i for i in range(1, k + 1))


def best_length(cost: StepCost, rows: int, tokens: float, k_max: int, p: float) -> int:
    """The draft length, up to `k_max`, that gives the step the most tokens per second, if that
    beats the step without a draft by MARGIN (else 0). A run ends at its first miss, so past a
    few tokens each one more adds a row for less and less: at p = 0.7 on a CPU where a row costs
    0.44 of a step, 2 tokens are best, where halving from 12 until it pays would stop at 6. Unmeasured: k_max."""
    line = cost.line()
    if line is None:
        return k_max
    a, b = line
    base = tokens / (a + b * rows)
    best, best_rate = 0, MARGIN * base
    for k in range(1, k_max + 1):
        rate = (tokens + expected_kept(p, k)) / (a + b * (rows + k) + cost.per_draft_token * k)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


def common_length(cost: StepCost, ps: list[float], lengths: list[int], n_decoding: int) -> int:
    """The one draft length for a step whose `n_decoding` sequences are all evaluated with as many
    rows (server/engine/stepplan.py pads the shorter drafts): the one giving the most tokens per
    second, if that beats no draft by MARGIN (else 0). `ps`, `lengths`: each draft's chance per
    token and length. Unmeasured: the longest."""
    longest = max(lengths, default=0)
    line = cost.line()
    if line is None:
        return longest
    a, b = line

    def rate(k: int) -> float:
        kept = sum(expected_kept(p, min(k, n)) for p, n in zip(ps, lengths))
        return (n_decoding + kept) / (a + b * n_decoding * (k + 1))

    best = max(range(longest + 1), key=rate)
    return best if rate(best) > MARGIN * rate(0) else 0
