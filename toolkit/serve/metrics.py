"""The server's Prometheus metrics, in a registry of its own (several servers can live in one process)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """Requests and errors by model and HTTP status; latency, queue time and batch size histograms.

    Requests for models the server does not have count under model="" so that clients
    cannot grow the label set.
    """

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dltk_requests", "Inference requests answered, by model and HTTP status.", ["model", "code"], registry=self.registry,
        )
        self.errors = Counter(
            "dltk_request_errors", "Inference requests answered with an error, by model and HTTP status.", ["model", "code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "dltk_requests_in_flight", "Inference requests read and not yet answered.", registry=self.registry,
        )
        self.latency = Histogram(
            "dltk_request_latency_seconds", "Time from reading a request to answering it.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_time = Histogram(
            "dltk_queue_time_seconds", "Time a request waited for its batch to start.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "dltk_batch_size", "Rows in each batch the model ran.", ["model"], buckets=_BATCH_BUCKETS, registry=self.registry,
        )

    def answered(self, model: str, code: int, seconds: float) -> None:
        self.requests.labels(model, str(code)).inc()
        if code >= 400:
            self.errors.labels(model, str(code)).inc()
        if model:
            self.latency.labels(model).observe(seconds)

    def batch(self, model: str, queue_seconds: list[float], rows: int) -> None:
        for seconds in queue_seconds:
            self.queue_time.labels(model).observe(seconds)
        self.batch_size.labels(model).observe(rows)

    def render(self) -> bytes:
        return generate_latest(self.registry)
