"""Prometheus metrics, in a registry of the app's own (so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Requests, latencies, batch sizes, queue depth, errors by code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "explain_requests",
            "HTTP requests answered.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "explain_request_seconds",
            "Time to answer a request.",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "explain_images",
            "Images received by explanation endpoints.",
            ["endpoint"],
            registry=self.registry,
        )
        self.errors = Counter(
            "explain_errors", "Error answers by code.", ["code"], registry=self.registry
        )
        self.batch_size = Histogram(
            "explain_batch_images",
            "Images per model batch.",
            ["model", "kind"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "explain_batch_requests",
            "Requests gathered into one model batch.",
            ["model", "kind"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "explain_inference_seconds",
            "Model time per batch.",
            ["model", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "explain_queue_images", "Images waiting for a model.", ["model"], registry=self.registry
        )
        self.rejected = Counter(
            "explain_queue_rejections",
            "Requests refused because a model's queue was full.",
            ["model"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "explain_ready", "1 once every model is loaded and warm.", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
