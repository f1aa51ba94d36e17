"""Prometheus metrics, one registry per app (kept in app.extensions, never module globals).

Generation outcomes are recorded by the engine's worker through `observe`, which
is how a generation stopped by a client disconnect shows up
(`llama_server_generations_total{finish_reason="cancelled"}`). The decoder's own
counters (slots, KV cells, tokens and sequences per llama_decode step) are read
from its stats snapshot at scrape time, so the decode loop pays nothing for them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from server.engine.decoder_types import SEQUENCES_PER_STEP_BUCKETS, TOKENS_PER_STEP_BUCKETS

# Seconds: from a few ms (tiny model, short prompt) to minutes (7B on a laptop CPU, long answer).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, engine):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "llama_server_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.prompt_tokens = Counter("llama_server_prompt_tokens", "Prompt tokens of generations run", registry=r)
        self.cached_tokens = Counter(
            "llama_server_prompt_tokens_cached",
            "Prompt tokens reused from a slot's KV cache, not recomputed",
            registry=r,
        )
        self.generated_tokens = Counter("llama_server_generated_tokens", "Tokens generated", registry=r)
        self.generations = Counter(
            "llama_server_generations", "Generations by how they ended", ["finish_reason"], registry=r
        )
        Gauge("llama_server_queue_depth", "Requests waiting for the model", registry=r).set_function(engine.queue_depth)
        Gauge("llama_server_active_generations", "Generations running now", registry=r).set_function(
            lambda: engine.active
        )
        # For load balancers and autoscalers: 1 only while the model is loaded and serving.
        Gauge(
            "llama_server_model_ready", "1 when the model is loaded and requests are served, else 0", registry=r
        ).set_function(lambda: float(engine.state == "ready"))
        r.register(DecoderCollector(engine))
        self.ttft = Histogram(
            "llama_server_time_to_first_token_seconds",
            "Submit to first token, queue wait included",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "llama_server_generation_seconds",
            "Submit to last token, queue wait included",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe(self, finished) -> None:
        """Record one ended generation (called from the engine's worker thread)."""
        t, usage = finished.timings, finished.usage
        self.generations.labels(finished.finish_reason).inc()
        self.generated_tokens.inc(usage["completion_tokens"])
        if (
            finished.finish_reason in ("cancelled", "timeout")
            and usage["completion_tokens"] == 0
            and t["prompt_ms"] == 0
        ):
            return  # ended while queued: the model never saw it
        self.prompt_tokens.inc(usage["prompt_tokens"])
        self.cached_tokens.inc(finished.cached_tokens)
        if usage["completion_tokens"]:
            self.ttft.observe((t["queue_ms"] + t["prompt_ms"]) / 1000)
        self.latency.observe((t["queue_ms"] + t["prompt_ms"] + t["generation_ms"]) / 1000)

    def count_request(self, endpoint: str, status: int) -> None:
        self.requests.labels(endpoint, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class DecoderCollector:
    """Slots, KV cells and per-step batch histograms from the engine's decoder (once loaded)."""

    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        stats = self.engine.decoder_stats()
        if stats is None:
            return
        for name, doc, value in (
            ("slots_total", "Sequence slots in the decoder (PARALLEL)", stats.slots_total),
            ("slots_busy", "Slots decoding a request now", stats.slots_busy),
            ("slots_free", "Slots free for a new request now", stats.slots_total - stats.slots_busy),
            ("kv_cells_used", "KV cache cells holding tokens (idle slots keep a prefix)", stats.kv_cells_used),
            ("prompt_cache_prompts", "Prompt states kept in RAM for reuse", stats.prompt_cache_prompts),
            ("prompt_cache_bytes", "Bytes of prompt states kept in RAM", stats.prompt_cache_bytes),
            ("prompt_cache_limit_bytes", "Most bytes the RAM prompt cache may hold", stats.prompt_cache_limit_bytes),
        ):
            yield GaugeMetricFamily(f"llama_server_{name}", doc, value=value)
        yield CounterMetricFamily(
            "llama_server_draft_tokens", "Speculative decoding: tokens drafted", value=stats.draft_tokens
        )
        yield CounterMetricFamily(
            "llama_server_draft_accepted",
            "Speculative decoding: drafted tokens the model kept",
            value=stats.draft_accepted,
        )
        yield CounterMetricFamily(
            "llama_server_prompt_cache_hits", "Prompts that got a state back from RAM", value=stats.prompt_cache_hits
        )
        yield _histogram(
            "llama_server_batch_tokens",
            "Tokens per llama_decode step (decode tokens and prompt chunks)",
            TOKENS_PER_STEP_BUCKETS,
            stats.tokens_histogram,
            stats.tokens,
        )
        yield _histogram(
            "llama_server_batch_sequences",
            "Sequences sharing one llama_decode step (batch size)",
            SEQUENCES_PER_STEP_BUCKETS,
            stats.sequences_histogram,
            stats.sequences,
        )


def _histogram(name: str, doc: str, bounds, counts, total) -> HistogramMetricFamily:
    """A Prometheus histogram from per-bucket counts (the last one is +Inf)."""
    cumulative, buckets = 0, []
    for bound, count in zip([*map(float, bounds), "+Inf"], counts):
        cumulative += count
        buckets.append((str(bound), cumulative))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=total)
