"""The moderation's Prometheus metrics, in the app's registry: checks, flags, guard latency, failures.

`direction` is input (a request), output (an answer, each window and the whole) or api
(POST /v1/moderations).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

GUARD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class SafetyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.checks = Counter(
            "llama_server_moderation_checks",
            "Guard checks by direction and outcome (safe, flagged, failed)",
            ["direction", "outcome"],
            registry=registry,
        )
        self.flags = Counter(
            "llama_server_moderation_flags",
            "Flagged checks by direction and hazard category (none: flagged without a category)",
            ["direction", "category"],
            registry=registry,
        )
        self.latency = Histogram(
            "llama_server_moderation_guard_seconds",
            "Time one guard check took, queue wait included",
            ["direction"],
            buckets=GUARD_BUCKETS,
            registry=registry,
        )
        self.failures = Counter(
            "llama_server_moderation_guard_failures",
            "Guard checks that gave no verdict, by direction and reason",
            ["direction", "reason"],
            registry=registry,
        )
