"""The server's Prometheus metrics (``GET /metrics``), with the maintained ``prometheus_client`` library.

Each app has its own registry, so several apps in one process (tests) never share counts; with ``workers`` > 1 each
worker process answers its own figures (docs/serve.md).

- ``multilabel_ic_serve_requests_total{path, status}``: answers sent;
- ``multilabel_ic_serve_request_seconds{path}``: time from the request's arrival to its answer (histogram);
- ``multilabel_ic_serve_batch_size``: images per batch run through the network (histogram);
- ``multilabel_ic_serve_batch_seconds``: time the network took per batch (histogram);
- ``multilabel_ic_serve_in_flight_requests``: requests being answered now;
- ``multilabel_ic_serve_model_loaded``: 1 once the model is loaded (``/ping`` answers 200), else 0.
"""

from __future__ import annotations

from ..exceptions import require

require("prometheus_client", extra="serve")

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["ServeMetrics", "CONTENT_TYPE_LATEST", "KNOWN_PATHS"]

KNOWN_PATHS = ("/ping", "/invocations", "/metadata", "/metrics")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """The metrics of one app; :meth:`render` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ns = "multilabel_ic_serve"
        self.requests = Counter(f"{ns}_requests", "Answers sent, by path and HTTP status.", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram(f"{ns}_request_seconds", "Seconds from a request's arrival to its answer.", ["path"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram(f"{ns}_batch_size", "Images per batch run through the network.",
                                    buckets=_BATCH_BUCKETS, registry=self.registry)
        self.batch_seconds = Histogram(f"{ns}_batch_seconds", "Seconds the network took per batch.",
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.in_flight = Gauge(f"{ns}_in_flight_requests", "Requests being answered now.", registry=self.registry)
        self.model_loaded = Gauge(f"{ns}_model_loaded", "1 once the model is loaded (GET /ping answers 200).",
                                  registry=self.registry)

    @staticmethod
    def path_label(path: str | None) -> str:
        """The path as a label: one of the server's paths, or ``other`` (so unknown paths cannot grow the series)."""
        return path if path in KNOWN_PATHS else "other"

    def observe_request(self, path: str | None, status: int, seconds: float) -> None:
        label = self.path_label(path)
        self.requests.labels(path=label, status=str(status)).inc()
        self.latency.labels(path=label).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
