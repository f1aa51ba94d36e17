"""Prometheus metrics, one registry per app (kept in app.extensions, never module globals).

Generation outcomes are recorded by the engine's worker through `observe`, which
is how a generation stopped by a client disconnect shows up
(`llama_server_generations_total{finish_reason="cancelled"}`). The decoder's own
counters (slots, KV cells, tokens and sequences per llama_decode step) are read
from its stats snapshot at scrape time, so the decode loop pays nothing for them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from server.engine.decoder_types import SEQUENCES_PER_STEP_BUCKETS, TOKENS_PER_STEP_BUCKETS

# Seconds: from a few ms (tiny model, short prompt) to minutes (7B on a laptop CPU, long answer).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """The app's metrics; generation and decoder figures carry the `model` that served them."""

    def __init__(self, library):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "llama_server_requests",
            "HTTP requests by endpoint, status and model",
            ["endpoint", "status", "model"],
            registry=r,
        )
        per_model = ["model"]
        self.prompt_tokens = Counter(
            "llama_server_prompt_tokens", "Prompt tokens of generations run", per_model, registry=r
        )
        self.cached_tokens = Counter(
            "llama_server_prompt_tokens_cached",
            "Prompt tokens reused from a slot's KV cache, not recomputed",
            per_model,
            registry=r,
        )
        self.generated_tokens = Counter("llama_server_generated_tokens", "Tokens generated", per_model, registry=r)
        self.generations = Counter(
            "llama_server_generations", "Generations by how they ended", ["finish_reason", "model"], registry=r
        )
        r.register(LibraryCollector(library))
        self.ttft = Histogram(
            "llama_server_time_to_first_token_seconds",
            "Submit to first token, queue wait included",
            per_model,
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "llama_server_generation_seconds",
            "Submit to last token, queue wait included",
            per_model,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def observe(self, finished, model: str = "") -> None:
        """Record one ended generation of `model` (called from its engine's worker thread)."""
        t, usage = finished.timings, finished.usage
        self.generations.labels(finished.finish_reason, model).inc()
        self.generated_tokens.labels(model).inc(usage["completion_tokens"])
        if (
            finished.finish_reason in ("cancelled", "timeout")
            and usage["completion_tokens"] == 0
            and t["prompt_ms"] == 0
        ):
            return  # ended while queued: the model never saw it
        self.prompt_tokens.labels(model).inc(usage["prompt_tokens"])
        self.cached_tokens.labels(model).inc(finished.cached_tokens)
        if usage["completion_tokens"]:
            self.ttft.labels(model).observe((t["queue_ms"] + t["prompt_ms"]) / 1000)
        self.latency.labels(model).observe((t["queue_ms"] + t["prompt_ms"] + t["generation_ms"]) / 1000)

    def count_request(self, endpoint: str, status: int, model: str = "") -> None:
        self.requests.labels(endpoint, str(status), model).inc()

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class LibraryCollector:
    """Per loaded model: queue, running generations, readiness and its decoder's figures."""

    def __init__(self, library):
        self.library = library

    def collect(self):
        families = {
            "queue_depth": GaugeMetricFamily(
                "llama_server_queue_depth", "Requests waiting for a slot", labels=["model"]
            ),
            "active": GaugeMetricFamily("llama_server_active_generations", "Generations running now", labels=["model"]),
            # For load balancers and autoscalers: 1 only while the model is loaded and serving.
            "ready": GaugeMetricFamily(
                "llama_server_model_ready", "1 when the model is loaded and requests are served", labels=["model"]
            ),
            "bytes": GaugeMetricFamily(
                "llama_server_model_memory_bytes", "What a loaded model takes", labels=["model", "place"]
            ),
        }
        decoders = []
        for entry in self.library.entries():
            name, engine = entry.model.name, entry.engine
            families["queue_depth"].add_metric([name], engine.queue_depth())
            families["active"].add_metric([name], engine.active)
            families["ready"].add_metric([name], float(engine.state == "ready"))
            families["bytes"].add_metric([name, "ram"], entry.memory.ram)
            families["bytes"].add_metric([name, "vram"], entry.memory.vram)
            decoders.append((name, engine))
        yield from families.values()
        yield from DecoderCollector(decoders).collect()


# Speculative decoding per kind of guess: (metric, help, column of DecoderStats.draft_by_kind).
DRAFT_KIND_COUNTERS = (
    ("draft_kind_offered", "Steps where a sequence had a guess of this kind to draft", 1),
    ("draft_kind_refused", "Guesses the cost check refused (a step without the draft was faster)", 2),
    ("draft_kind_probes", "Refused guesses drafted anyway to measure their kind again", 3),
    ("draft_kind_drafts", "Drafts of this kind verified", 4),
    ("draft_kind_tokens", "Tokens drafted of this kind", 5),
    ("draft_kind_accepted", "Drafted tokens of this kind the model kept", 6),
)


class DecoderCollector:
    """Slots, KV cells and per-step batch histograms from each loaded model's decoder."""

    def __init__(self, engines):
        self.engines = engines  # [(model name, engine)]

    def collect(self):
        gauges: dict[str, GaugeMetricFamily] = {}
        counters: dict[str, CounterMetricFamily] = {}
        histograms = {
            name: HistogramMetricFamily(f"llama_server_{name}", doc, labels=["model"])
            for name, doc in (
                ("batch_tokens", "Tokens per llama_decode step (decode tokens and prompt chunks)"),
                ("batch_sequences", "Sequences sharing one llama_decode step (batch size)"),
            )
        }
        for model, engine in self.engines:
            stats = engine.decoder_stats()
            if stats is None:
                continue
            for name, doc, value in (
                ("slots_total", "Sequence slots in the decoder (PARALLEL)", stats.slots_total),
                ("slots_busy", "Slots decoding a request now", stats.slots_busy),
                ("slots_free", "Slots free for a new request now", stats.slots_total - stats.slots_busy),
                ("kv_cells_used", "KV cache cells holding tokens (idle slots keep a prefix)", stats.kv_cells_used),
                ("prompt_cache_prompts", "Prompt states kept in RAM for reuse", stats.prompt_cache_prompts),
                ("prompt_cache_bytes", "Bytes of prompt states kept in RAM", stats.prompt_cache_bytes),
                (
                    "prompt_cache_limit_bytes",
                    "Most bytes the RAM prompt cache may hold",
                    stats.prompt_cache_limit_bytes,
                ),
            ):
                gauges.setdefault(name, GaugeMetricFamily(f"llama_server_{name}", doc, labels=["model"]))
                gauges[name].add_metric([model], value)
            for name, doc, value in (
                ("draft_tokens", "Speculative decoding: tokens drafted", stats.draft_tokens),
                ("draft_accepted", "Speculative decoding: drafted tokens the model kept", stats.draft_accepted),
                ("prompt_cache_hits", "Prompts that got a state back from RAM", stats.prompt_cache_hits),
            ):
                counters.setdefault(name, CounterMetricFamily(f"llama_server_{name}", doc, labels=["model"]))
                counters[name].add_metric([model], value)
            for name, doc, column in DRAFT_KIND_COUNTERS:
                family = counters.setdefault(
                    name, CounterMetricFamily(f"llama_server_{name}", doc, labels=["model", "kind"])
                )
                for row in stats.draft_by_kind:
                    family.add_metric([model, row[0]], row[column])
            for name, bounds, counts, total in (
                ("batch_tokens", TOKENS_PER_STEP_BUCKETS, stats.tokens_histogram, stats.tokens),
                ("batch_sequences", SEQUENCES_PER_STEP_BUCKETS, stats.sequences_histogram, stats.sequences),
            ):
                histograms[name].add_metric([model], _buckets(bounds, counts), total)
        yield from gauges.values()
        yield from counters.values()
        yield from histograms.values()


def _buckets(bounds, counts) -> list[tuple[str, int]]:
    """Cumulative Prometheus buckets from per-bucket counts (the last one is +Inf)."""
    cumulative, buckets = 0, []
    for bound, count in zip([*map(float, bounds), "+Inf"], counts):
        cumulative += count
        buckets.append((str(bound), cumulative))
    return buckets
