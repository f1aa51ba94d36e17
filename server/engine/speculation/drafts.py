"""Draft sources for speculative decoding: guesses of a sequence's next tokens, cheap to make.

The decoder verifies a slot's draft in the same llama_decode as everyone else's
tokens and keeps the longest prefix the target model agrees with (a drafted
token is kept exactly when it is the token the request's sampler picks at its
place), so a draft source only changes speed, never the text. `NgramDraft`
copies from the sequence's own history (prompt lookup: an answer that quotes or
rewrites its prompt repeats long runs of it); `DraftLength` adapts how much to
draft from the measured acceptance, so a source that keeps missing costs little.
"""

from __future__ import annotations

from typing import Protocol, Sequence


class DraftSource(Protocol):
    """Per-sequence drafts; `key` identifies the sequence (its slot) between begin and end."""

    def begin(self, key: int, prompt: Sequence[int]) -> None: ...

    def kind(self, key: int, history: Sequence[int]) -> int:
        """What kind of guess a draft after `history` would be, cheaply, before drafting: the
        speculator measures acceptance per kind across all sequences (0: no guess to make)."""
        ...

    def draft(self, key: int, history: Sequence[int], n_max: int) -> list[int]:
        """Up to `n_max` tokens that may follow `history` (prompt + answer so far, the token
        about to be decoded included); [] when there is no good guess."""
        ...

    def end(self, key: int) -> None: ...


class NgramDraft:
    """Prompt lookup: find the latest earlier occurrence of the last `n` tokens (n from
    `n_match` down to `n_min`) and propose the tokens that followed it. The kind of a
    guess is the length of the n-gram it matched: a continuation found after 12 matching
    tokens is kept far more often than one found after 2 (the text is being copied),
    and the speculator learns by how much.

    Each sequence keeps, for every n, a map n-gram -> the position after its latest
    occurrence, extended as the history grows (amortised O(n_match) per token).

    Beside them, one pool for all requests, as llama-server's ngram-mod keeps: each
    `n_match`-gram ever seen -> the token that followed it. When a request's own text
    has no full-length match, a draft is read from the pool token by token (its own
    kind, `n_match + 1`), so a request that repeats an earlier one (a retry, an answer
    regenerated) drafts the earlier answer. The pool is emptied when it reaches
    `pool_max` entries.

    An answer that repeats its own structure (a JSON list of records) has the same 12
    tokens before different continuations (`"city": "` before Paris, then London), so
    the latest one seen is often wrong even when the whole request was seen before. A
    second pool keys on the last `long_n` tokens (a hash of them) and is asked first (its
    kind, `n_match + 2`): where a request repeats an earlier one, the context that long
    tells its records apart.
    """

    def __init__(self, n_match: int = 12, n_min: int = 2, pool_max: int = 1 << 20, long_n: int = 32) -> None:
        if not 1 <= n_min <= n_match < long_n:
            raise ValueError("need 1 <= n_min <= n_match < long_n")
        self.n_match, self.n_min, self.pool_max, self.long_n = n_match, n_min, pool_max, long_n
        self.pool_kind, self.long_kind = n_match + 1, n_match + 2
        self._index: dict[int, tuple[list[dict[tuple[int, ...], int]], list[int]]] = {}
        self._pool: dict[tuple[int, ...], int] = {}
        self._long: dict[int, int] = {}  # hash of long_n tokens -> the token that followed them
        # The last match per sequence, by history length: `kind` and `draft` ask about the same
        # history in one step, and the lookup is done once.
        self._last: dict[int, tuple[int, int, int]] = {}

    def begin(self, key: int, prompt: Sequence[int]) -> None:
        self._index[key] = ([{} for _ in range(self.n_match + 1)], [0])
        self._last.pop(key, None)

    def end(self, key: int) -> None:
        self._index.pop(key, None)
        self._last.pop(key, None)

    def kind(self, key: int, history: Sequence[int]) -> int:
        n, _ = self._match(key, history)
        if self._long_pooled(history, 1):
            return self.long_kind
        if n < self.n_match and self._pooled(history, 1):
            return self.pool_kind
        return n

    def draft(self, key: int, history: Sequence[int], n_max: int) -> list[int]:
        if n_max <= 0:
            return []
        n, start = self._match(key, history)
        long = self._long_pooled(history, n_max)
        if long:
            return long
        if n < self.n_match:
            pooled = self._pooled(history, n_max)
            if pooled:
                return pooled
        return list(history[start : start + n_max]) if n else []

    def kind_name(self, kind: int) -> str:
        """The label of a kind in metrics: a match in the sequence's own text (prompt and answer so
        far, "own-2" ... "own-12" by the n-gram's length, short ones together), or one of the pools
        shared by all requests (text other requests wrote)."""
        if kind == self.long_kind:
            return "pool-long"
        if kind == self.pool_kind:
            return "pool"
        return "own-2-3" if kind <= 3 else "own-4-11" if kind < self.n_match else f"own-{self.n_match}"

    def _pooled(self, history: Sequence[int], n_max: int) -> list[int]:
        """Up to `n_max` tokens read from the shared pool, each following the last n_match before it."""
        tail = list(history[-self.n_match :])
        out: list[int] = []
        while len(out) < n_max and len(tail) == self.n_match:
            token = self._pool.get(tuple(tail))
            if token is None:
                break
            out.append(token)
            tail = [*tail[1:], token]
        return out

    def _long_pooled(self, history: Sequence[int], n_max: int) -> list[int]:
        """Up to `n_max` tokens read from the long pool, each following the last long_n before it."""
        tail = list(history[-self.long_n :])
        out: list[int] = []
        while len(out) < n_max and len(tail) == self.long_n:
            token = self._long.get(hash(tuple(tail)))
            if token is None:
                break
            out.append(token)
            tail = [*tail[1:], token]
        return out

    def _match(self, key: int, history: Sequence[int]) -> tuple[int, int]:
        """(n, start): the longest n-gram ending `history` seen before, and where its continuation
        starts; (0, 0) when there is none."""
        if key not in self._index:
            return 0, 0
        last = self._last.get(key)
        if last is not None and last[0] == len(history):
            return last[1], last[2]
        n, start = self._lookup(key, history)
        self._last[key] = (len(history), n, start)
        return n, start

    def _lookup(self, key: int, history: Sequence[int]) -> tuple[int, int]:
        maps, done = self._index[key]
        self._extend(maps, done, history)
        for n in range(min(self.n_match, len(history) - 1), self.n_min - 1, -1):
            start = maps[n].get(tuple(history[len(history) - n :]))
            if start is not None:
                return n, start
        return 0, 0

    def _extend(self, maps: list[dict[tuple[int, ...], int]], done: list[int], history: Sequence[int]) -> None:
        """Index every n-gram that ends before the last token (whose continuation is unknown)."""
        end = len(history) - 1
        if len(self._pool) > self.pool_max:
            self._pool.clear()
        if len(self._long) > self.pool_max:
            self._long.clear()
        for stop in range(max(done[0], 1), end + 1):  # an n-gram ending at `stop` is followed by history[stop]
            for n in range(self.n_min, min(self.n_match, stop) + 1):
                maps[n][tuple(history[stop - n : stop])] = stop
            if stop >= self.n_match:
                self._pool[tuple(history[stop - self.n_match : stop])] = history[stop]
            if stop >= self.long_n:
                self._long[hash(tuple(history[stop - self.long_n : stop]))] = history[stop]
        done[0] = max(done[0], end + 1)


class DraftLength:
    """How many tokens to draft for one sequence: more while drafts are accepted, fewer (down
    to none, with an occasional probe) while they are not. An exponential average of the
    accepted share of recent drafts drives it."""

    def __init__(self, n_max: int, probe_every: int = 8) -> None:
        self.n_max, self.probe_every = n_max, probe_every
        self.rate, self._idle = 0.5, 0

    def next(self) -> int:
        if self.rate < 0.1:  # drafts keep missing: stop, but look again now and then
            self._idle += 1
            return 2 if self._idle % self.probe_every == 0 else 0
        return max(1, min(self.n_max, round(self.n_max * self.rate * 1.5)))

    def update(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.rate = 0.7 * self.rate + 0.3 * accepted / drafted
