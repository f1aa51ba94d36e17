"""The moderation policy: which checks a request gets, what a flag or a failed guard does.

MODERATION (off, input, output, both) is the server's; a request may narrow it with the
`X-Moderation` header (both -> input or output), never widen it and never switch it off
while the server moderates. An input check runs while the request's model evaluates its
prompt (server/http/moderation.py), and no token is read before it passes: flagged, it is
a 400 `content_filter` naming the categories, or with MODERATION_REFUSAL set, that text as
the model's answer (finish_reason `content_filter`). Output is checked by
server/safety/windows.py. A guard that gives no verdict follows GUARD_FAILURE: closed
blocks (a 503 for a request, `content_filter` for an answer), open lets it through; both
are logged and counted.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from server.engine.generation import Generation, GenerationRequest
from server.engine.request import Delta, Done, Request
from server.errors import InvalidRequest, ServerError
from server.safety.guard import Guard, GuardFailed
from server.safety.metrics import SafetyMetrics
from server.safety.prompt import Turn, alternate
from server.safety.verdict import Verdict
from server.settings import Settings

log = logging.getLogger("server")
MODES = {"off": (False, False), "input": (True, False), "output": (False, True), "both": (True, True)}
HEADER = "X-Moderation"


class ContentFiltered(ServerError):
    status, type = 400, "content_filter"

    def __init__(self, verdict: Verdict, names: dict[str, str]) -> None:
        named = ", ".join(f"{c} ({names.get(c, c)})" for c in verdict.categories)
        super().__init__(
            "the request was flagged by content moderation" + (f": {named}" if named else ""),
            categories=list(verdict.categories),
        )


class ModerationUnavailable(ServerError):
    status, type = 503, "moderation_unavailable"
    headers = {"Retry-After": "5"}


class TooLongToModerate(ServerError):
    status, type = 400, "prompt_too_long"


def unavailable(exc: GuardFailed) -> ServerError:
    """What a client is told when a check it needed gave no verdict (GUARD_FAILURE=closed)."""
    if exc.reason == "too_long":  # the client's text, not the server, is at fault: a 400
        return TooLongToModerate(f"content moderation cannot judge this: {exc}")
    return ModerationUnavailable(f"content moderation is unavailable: {exc}")


@dataclass(frozen=True)
class Plan:
    input: bool
    output: bool


class Moderation:
    def __init__(self, settings: Settings, guard: Guard | None, metrics: SafetyMetrics) -> None:
        self.settings, self.guard, self.metrics = settings, guard, metrics
        self._pool: ThreadPoolExecutor | None = None

    @property
    def pool(self) -> ThreadPoolExecutor:
        """Where input checks run beside the prompt's evaluation, and fast mode's windows beside the stream."""
        if self._pool is None:
            # One check per open request at most: input checks and fast mode's windows.
            self._pool = ThreadPoolExecutor(self.settings.http_threads, thread_name_prefix="moderation")
        return self._pool

    def plan(self, asked: str | None) -> Plan:
        """The checks for one request: the server's, narrowed by the request's header."""
        server = MODES[self.settings.moderation]
        if asked is None:
            return Plan(*server)
        want = MODES.get(asked.strip().lower())
        if want is None:
            raise InvalidRequest(f"'{HEADER}' must be one of {', '.join(MODES)}", HEADER)
        if any(w and not s for w, s in zip(want, server)):
            server_mode = self.settings.moderation
            raise InvalidRequest(f"'{HEADER}' may only narrow the server's moderation ({server_mode})", HEADER)
        if server != (False, False) and want == (False, False):
            raise InvalidRequest(f"'{HEADER}': this server requires moderation; it cannot be switched off", HEADER)
        return Plan(*want)

    def names(self) -> dict[str, str]:
        fmt = self.guard.format if self.guard else None
        return {c: fmt.category_name(c) or c for c in fmt.codes()} if fmt else {}

    def check(self, turns: Sequence[Turn], direction: str) -> Verdict:
        """The guard's verdict, timed and counted; a failure as GUARD_FAILURE says (closed: flagged)."""
        started = time.monotonic()
        try:
            if self.guard is None:
                raise GuardFailed("no guard model is set (GUARD_MODEL)", "unavailable")
            verdict = self.guard.check(alternate(turns))
        except GuardFailed as exc:
            self.metrics.failures.labels(direction, exc.reason).inc()
            self.metrics.checks.labels(direction, "failed").inc()
            closed = self.settings.guard_failure == "closed"
            policy = "closed" if closed else "open"
            log.warning("moderation: the %s check failed (%s); GUARD_FAILURE=%s", direction, exc, policy)
            if closed:
                raise
            return Verdict(False, 0.0, ())
        finally:
            self.metrics.latency.labels(direction).observe(time.monotonic() - started)
        self.metrics.checks.labels(direction, "flagged" if verdict.flagged else "safe").inc()
        if verdict.flagged:
            for code in verdict.categories or ("none",):
                self.metrics.flags.labels(direction, code).inc()
        return verdict

    def screen(self, req: Request, plan: Plan) -> Generation | None:
        """The input check: None to go on, a canned refusal, or ContentFiltered / ModerationUnavailable."""
        if not plan.input:
            return None
        try:
            verdict = self.check(turns_of(req), "input")
        except GuardFailed as exc:
            raise unavailable(exc) from None
        if not verdict.flagged:
            return None
        if self.settings.moderation_refusal:
            return canned(req, self.settings.moderation_refusal)
        raise ContentFiltered(verdict, self.names())

    def output_check(self, req: Request) -> Callable[[str], bool]:
        """Whether an answer text (a window, or the whole) is flagged, with the request as context."""
        context = turns_of(req)

        def flagged(text: str) -> bool:
            try:
                return self.check([*context, Turn("Agent", text)], "output").flagged
            except GuardFailed:
                return True  # closed (open returned a verdict)

        return flagged


def turns_of(req: Request) -> list[Turn]:
    """The request as the guard reads it: users' and tools' words as User turns (a system
    message with the next user turn), the assistant's as Agent turns."""
    if req.prompt is not None:
        return [Turn("User", req.prompt)]
    turns: list[Turn] = []
    system = ""
    for m in req.messages:
        text = m.content + "".join(f"\n{c.name}({c.arguments})" for c in m.tool_calls)
        if m.role == "system":
            system += text + "\n\n"
        elif m.role == "assistant":
            turns.append(Turn("Agent", text))
        else:
            turns.append(Turn("User", system + text))
            system = ""
    if system:
        turns.append(Turn("User", system))
    return turns


def canned(req: Request, text: str) -> Generation:
    """A finished generation answering `text`, as if the model had, ended by content_filter."""
    generation = Generation(GenerationRequest((), req.sampling, req.stream, time.monotonic() + 60), None)
    generation.put(Delta(text))
    zero = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    timings = {"queue_ms": 0.0, "prompt_ms": 0.0, "generation_ms": 0.0, "tokens_per_second": 0.0}
    generation.finish(Done("content_filter", zero, timings))
    return generation
