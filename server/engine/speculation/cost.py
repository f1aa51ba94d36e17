"""Whether a draft pays for itself: the measured cost of a step against the tokens it should give.

Checking k drafted tokens adds k rows to a step. On a GPU, or a CPU reading a large
model, a step costs about the same for 1 row or 16 (the weights are read once), and
drafts are nearly free; on a CPU with a small model each row costs much of a step, and
a draft that is half kept makes decoding slower. No constant suits both, so the cost is
measured: `StepCost` keeps a recent average of a step's time for each number of rows it
has seen, and the time making a drafted token takes (nothing for prompt lookup, a forward
pass of the draft model for a draft model); `best_length` drafts as many tokens as give
the step the most tokens per second, and none unless that beats the step without a draft
by a margin. A sequence's drafted tokens are kept with probability `p` each (`Acceptance`,
measured per sequence), so k of them give p + p^2 + ... + p^k tokens on average, the first
miss ending the run.

A step's time is not a straight line in its rows. On a 2-core CPU with SmolLM2
(bench/results/step-rows-smollm2-135m-instruct-q4_1.json) 2 rows took 1.74 times a 1-row
step, 8 rows 4.2 times and 16 rows 6.9 times: the second row costs nearly a step, each row
past 8 about a third of one. No line fits both ends: the one through 1 and 2 rows prices a
16-row step at 1.8 times its time, the one through 1 and 16 rows a 2-row step at 0.8 of its
time, so a fitted line refused long copies that pay and let short drafts through where a row
costs most. Hence a table, read between (and past) its measured sizes along the straight
line through the two nearest.
"""

from __future__ import annotations

import bisect

KEEP = 0.8  # each row count's average: a new step's time weighs 0.2, so the table follows the load
MARGIN = 1.05  # a draft must promise 5% more tokens per second than the step without it
PROBE_MAX = 256  # most refusals in a row before a refused kind is probed again


class StepCost:
    """A decode step's time by its rows (1 to `max_rows`): a recent average per row count."""

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.mean: dict[int, float] = {}  # rows -> seconds, recent average
        self._sizes: list[int] = []  # the measured row counts, sorted (read for every draft length tried)
        self.per_draft_token = 0.0  # seconds the draft source takes per drafted token, recent average

    def drafted(self, tokens: int, seconds: float) -> None:
        if tokens > 0:
            self.per_draft_token = 0.8 * self.per_draft_token + 0.2 * seconds / tokens

    def observe(self, rows: int, seconds: float) -> None:
        if not 0 < rows <= self.max_rows:
            return
        old = self.mean.get(rows)
        if old is None:
            bisect.insort(self._sizes, rows)
        self.mean[rows] = seconds if old is None else KEEP * old + (1 - KEEP) * seconds

    def seconds(self, rows: int) -> float | None:
        """The expected time of a step of `rows` rows, or None until two sizes were seen: measured,
        else on the line through the nearest measured sizes on each side (past the ends, the
        line through the last two), never sloping down."""
        sizes = self._sizes
        if len(sizes) < 2:  # one size alone says nothing of what another costs: draft, to measure one
            return None
        measured = self.mean.get(rows)
        if measured is not None:
            return measured
        i = min(max(bisect.bisect(sizes, rows), 1), len(sizes) - 1)  # sizes[i-1] < rows < sizes[i], or the end pair
        r0, r1 = sizes[i - 1], sizes[i]
        t0, t1 = self.mean[r0], self.mean[r1]
        slope = max((t1 - t0) / (r1 - r0), 0.0)
        return max(t0 + slope * (rows - r0), 1e-9)


class Acceptance:
    """The chance that a drafted token is kept: kept / tried, where the run of a draft stops at its
    first miss (that token is tried, the ones after it are not), over recent drafts."""

    def __init__(self, prior: float = 0.5, probe_every: int = 16) -> None:
        self.kept, self.tried = prior * 2, 2.0  # a prior worth two tokens
        self.first_probe, self.probe_every, self._refused = probe_every, probe_every, 0

    def update(self, drafted: int, kept: int) -> None:
        tried = kept + (1 if kept < drafted else 0)
        self.kept, self.tried = self.kept * 0.9 + kept, self.tried * 0.9 + tried
        self._refused = 0
        if drafted and kept == drafted:  # wholly kept: this kind may pay again, look at it as often as at first
            self.probe_every = self.first_probe

    def probe(self) -> bool:
        """Called when a draft of this kind was refused: True after `probe_every` refusals in a
        row, so a kind judged not worth drafting is measured again now and then (its chance may
        have changed, or the load). Each probe doubles the wait for the next, up to PROBE_MAX, and a
        wholly kept draft brings it back to the first: on a 2-core CPU a 2-token probe costs about
        a step more (bench/results/step-rows-*.json), so a probe every 16 refusals of a kind that
        never pays, for every kind, costs a few percent of decoding."""
        self._refused += 1
        if self._refused < self.probe_every:
            return False
        self._refused, self.probe_every = 0, min(2 * self.probe_every, PROBE_MAX)
        return True

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
    0.44 of a step, 2 tokens are best, where halving from 12 until it pays would stop at 6.
    Unmeasured: k_max."""
    base = cost.seconds(rows)
    if base is None:
        return k_max
    best, best_rate = 0, MARGIN * tokens / base
    for k in range(1, k_max + 1):
        seconds = cost.seconds(rows + k)
        assert seconds is not None  # two sizes are known: every size has a price
        rate = (tokens + expected_kept(p, k)) / (seconds + cost.per_draft_token * k)
        if rate > best_rate:
            best, best_rate = k, rate
    return best


def common_length(cost: StepCost, ps: list[float], lengths: list[int], n_decoding: int) -> int:
    """The one draft length for a step whose `n_decoding` sequences are all evaluated with as many
    rows (server/engine/stepplan.py pads the shorter drafts): the one giving the most tokens per
    second, if that beats no draft by MARGIN (else 0). `ps`, `lengths`: each draft's chance per
    token and length. Unmeasured: the longest."""
    longest = max(lengths, default=0)
    if cost.seconds(n_decoding) is None:
        return longest

    def rate(k: int) -> float:
        kept = sum(expected_kept(p, min(k, n)) for p, n in zip(ps, lengths))
        return (n_decoding + kept) / (cost.seconds(n_decoding * (k + 1)) or 1e-9)

    best = max(range(longest + 1), key=rate)
    return best if rate(best) > MARGIN * rate(0) else 0
