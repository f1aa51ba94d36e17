"""Speculative decoding inside continuous batching: which slots draft, and checking their drafts.

Each step, a decoding sequence may append a draft (guessed next tokens from a
DraftSource, server/engine/speculation/drafts.py) after its one token; the decoder evaluates
all of them in the same llama_decode as every other slot's tokens. `accept`
then walks the draft as llama.cpp's common_sampler_sample_and_accept_n does: at
each position the target's token is chosen exactly as plain decoding chooses it
(greedy, the request's sampler chain with its seeded draw, or sampling under its
grammar), from that position's row of logits, with the sampler's state (penalties,
grammar, random numbers) advanced by the tokens kept before it; the draft is kept
while it equals that token, and the first disagreement is the target's own token,
as plain decoding would have produced it. Nothing is sampled after it, so the
sampler draws exactly the random numbers plain decoding draws: with batch-invariant
logits (server/engine/invariance.py) the accepted text is plain decoding's text, at
any temperature, under a grammar, and with the same log-probabilities.

Drafting costs compute, which a CPU does not have spare when the batch is full:
a step's drafts are capped by `max_step_tokens` (decode tokens included), each
sequence's draft length follows its measured acceptance (DraftLength), and a
draft is kept only when the measured cost of a step's rows says the tokens it
should give are worth their time (server/engine/speculation/cost.py), so under load, or
where each row costs nearly a whole step, drafting stops by itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from server.engine.speculation.cost import Acceptance, StepCost, best_length, common_length, expected_kept
from server.engine.speculation.drafts import DraftLength, DraftSource

# Steps of more rows than this (long prompt chunks) are not used to fit the cost of a row.
COST_MAX_ROWS = 64
PROBE = 2  # tokens drafted to measure a kind of guess again after drafts of it were refused for long
GUIDED = -1  # the kind of a draft made only of what a grammar forces (the source had no guess)
Guide = Callable[[list[int], int], list[int]]  # (draft, most tokens) -> the draft a grammar makes of it


@dataclass
class DraftState:
    """One sequence's speculation: its adaptive length and counters (drafted, accepted)."""

    length: DraftLength
    draft: tuple[int, ...] = ()
    kind: int = 0  # the draft source's kind of guess the draft is (its acceptance is measured per kind)
    streak: bool = False  # its last draft was kept whole: the answer is copying, the next guess likely right
    sampled: bool = False  # its tokens are drawn at random: a guess is kept less often than a greedy one's
    drafted: int = 0
    accepted: int = 0


@dataclass
class KindCount:
    """What happened to one kind of guess, over all sequences (for metrics and the bench's
    per-kind figures): steps where the source had such a guess, how many of them the cost check
    refused, drafted anyway to measure again (probes), or drafted; and the tokens drafted and kept."""

    offered: int = 0
    refused: int = 0
    probes: int = 0
    drafts: int = 0
    drafted: int = 0
    kept: int = 0


def _never(token: int) -> bool:
    return False


class Speculator:
    def __init__(self, source: DraftSource, n_max: int, max_step_tokens: int) -> None:
        self.source, self.n_max, self.max_step_tokens = source, n_max, max_step_tokens
        self.drafted = self.accepted = 0  # over all sequences, for metrics
        self.cost = StepCost(COST_MAX_ROWS)
        # Acceptance per kind of guess, over all sequences: a new request starts from what the
        # earlier ones measured (a copy matched on 12 tokens is kept far more often than on 2).
        self.acceptance: dict[tuple[int, bool, bool], Acceptance] = {}
        self.by_kind: dict[str, KindCount] = {}  # keyed by kind_name: where drafts pay and where they cost

    def kind_name(self, kind: int) -> str:
        """A kind of guess as metrics label it: "grammar" for GUIDED, else the source's name for it."""
        if kind == GUIDED:
            return "grammar"
        name = getattr(self.source, "kind_name", None)
        return name(kind) if name is not None else str(kind)

    def _count(self, kind: int) -> KindCount:
        return self.by_kind.setdefault(self.kind_name(kind), KindCount())

    def observe(self, rows: int, seconds: float) -> None:
        """A decode step's size and time, for the cost model."""
        self.cost.observe(rows, seconds)

    def begin(self, key: int, prompt: Sequence[int], sampled: bool = False) -> DraftState:
        self.source.begin(key, prompt)
        return DraftState(DraftLength(self.n_max), sampled=sampled)

    def end(self, key: int) -> None:
        self.source.end(key)

    def plan(
        self,
        candidates: Sequence[tuple[int, DraftState, Sequence[int], int]],
        n_decoding: int,
        guides: Mapping[int, Guide] | None = None,
    ) -> None:
        """Set each candidate's draft for this step. A candidate: (key, state, history, room),
        room = how many tokens it may still take (max_tokens and context left). The step's
        budget (max_step_tokens minus the decoding sequences' own tokens) goes first come, and
        each draft is as long as gives the step the most tokens per second (cost.best_length), or
        none when no length beats the step without it.
        `guides`: per key, what a sequence's grammar makes of a draft (cut where it refuses,
        extended by what it forces: server/engine/constraints/guide.py); a guided sequence
        drafts what its grammar forces even where the source has no guess (kind GUIDED)."""
        budget = self.max_step_tokens - n_decoding
        rows, tokens = n_decoding, float(n_decoding)
        for key, state, history, room in candidates:
            guide = guides.get(key) if guides else None
            state.draft, state.kind = (), self.source.kind(key, history)
            if not state.kind:
                if guide is None:
                    continue
                state.kind = GUIDED
            acceptance = self.acceptance.setdefault(_bucket(state), Acceptance())
            p = acceptance.p
            k = best_length(self.cost, rows, tokens, min(state.length.next(), room, budget), p)
            count = self._count(state.kind)
            count.offered += 1
            if k == 0:
                count.refused += 1
                if acceptance.probe():  # refused for long: measure this kind again
                    k = min(PROBE, room, budget)
                    count.probes += k > 0
            started = time.perf_counter()
            if k > 0:
                draft = self.source.draft(key, history, k) if state.kind != GUIDED else []
                state.draft = tuple(guide(draft, k) if guide is not None else draft)
                if state.draft and state.draft[:1] != tuple(draft[:1]):  # the grammar's text alone:
                    state.kind = GUIDED  # measured apart (nearly always kept, unlike a 2-gram's guess)
            self.cost.drafted(len(state.draft), time.perf_counter() - started)
            budget -= len(state.draft)
            rows, tokens = rows + len(state.draft), tokens + expected_kept(p, len(state.draft))

    def equalize(self, states: Sequence[DraftState], n_decoding: int) -> None:
        """Cut the step's drafts to the one length that gives it the most tokens per second when
        every decoding sequence is evaluated with that many rows (server/engine/stepplan.py pads
        the shorter ones): a long draft beside short ones costs a padded row for each of them."""
        lengths = [len(st.draft) for st in states]
        if n_decoding < 2 or not any(lengths) or (len(set(lengths)) == 1 and len(lengths) == n_decoding):
            return
        ps = [self.acceptance.setdefault(_bucket(st), Acceptance()).p for st in states]
        k = common_length(self.cost, ps, lengths, n_decoding)
        for st in states:
            st.draft = st.draft[:k]

    def accept(
        self, state: DraftState, choose: Callable[[int, list[int]], int], final: Callable[[int], bool] = _never
    ) -> list[int]:
        """The tokens the target emits this step: `choose(i, kept)` is the target's token at
        draft position i (0 = after the sequence's own token) given the drafted tokens kept
        so far; it is called once per position, in order, and never after a disagreement,
        so a sampler that draws a random number per call draws as plain decoding does.
        A kept token that is `final` (end of generation) ends the walk: nothing after it
        is output. Returns the kept draft tokens followed by the target's next own token."""
        kept: list[int] = []
        for i, guess in enumerate(state.draft):
            token = choose(i, kept)
            if token != guess or final(token):
                return self._done(state, kept, token)
            kept.append(token)
        return self._done(state, kept, choose(len(state.draft), kept))

    def _done(self, state: DraftState, kept: list[int], own: int) -> list[int]:
        n = len(state.draft)
        if n:
            state.length.update(n, len(kept))
            self.acceptance.setdefault(_bucket(state), Acceptance()).update(n, len(kept))
            state.streak = len(kept) == n
            state.drafted += n
            state.accepted += len(kept)
            count = self._count(state.kind)
            count.drafts, count.drafted, count.kept = count.drafts + 1, count.drafted + n, count.kept + len(kept)
            self.drafted += n
            self.accepted += len(kept)
        state.draft = ()
        return [*kept, own]


def _bucket(state: DraftState) -> tuple[int, bool, bool]:
    """What acceptance is measured over: the kind of guess, whether the sequence's last draft
    was kept whole (inside a copied run nearly every guess is right; at its start, far fewer),
    and whether the sequence samples (a random draw keeps fewer guesses than greedy)."""
    return state.kind, state.streak, state.sampled
