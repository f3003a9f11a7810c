"""Prometheus metrics: HTTP requests for every app, model and training state for services.

One registry per app, so that several apps in one process (tests) stay apart.

Under gunicorn (servekit.gunicorn_settings) every worker writes its values to
files in a folder the master made for this start (``PROMETHEUS_MULTIPROC_DIR``,
prometheus_client's multiprocess mode), and /metrics is rendered from all of
them: whichever worker takes the scrape, counters and histograms are the sums
over every worker, those of workers that have exited included, so they never
jump back. Each gauge says how its workers' values combine (``multiprocess_mode``).
The gateway (waitress, one process) and in-process tests keep the plain
in-memory registry.
"""

from __future__ import annotations

import os
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def bounded_path(path: str) -> str:
    """A call's path as a label: no query string, job ids and version numbers as placeholders."""
    path = path.split("?", 1)[0]
    path = re.sub(r"^/train/[^/]+", "/train/<job_id>", path)
    return re.sub(r"/versions/\d+", "/versions/<version>", path)


def shared_metrics_dir() -> str | None:
    """The folder this process's workers share their metrics in, or None when values live in memory.

    prometheus_client picks its storage once, when first imported: the folder counts only if it was set by then.
    """
    if getattr(values.ValueClass, "_multiprocess", False):
        return os.environ.get(MULTIPROC_DIR_ENV)
    return None


class RequestMetrics:
    """Requests by endpoint, method and status, and their latency."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.shared_dir = shared_metrics_dir()
        self.requests = Counter(
            "http_requests", "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"], registry=self.registry,
        )
        self.request_seconds = Histogram(
            "http_request_duration_seconds", "Whole-request latency by endpoint",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.in_flight = Gauge(
            "http_requests_in_flight", "Requests being handled now", registry=self.registry,
            multiprocess_mode="livesum",  # every live worker's, added up; an exited worker has none
        )

    def render(self) -> bytes:
        """Prometheus text format: this process's registry, or the sum over every worker's files under gunicorn."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared_dir)
        return generate_latest(registry)


class ServiceMetrics(RequestMetrics):
    """A framework service's metrics: requests, the model call alone, model and training state."""

    def __init__(self):
        super().__init__()
        self.inference_seconds = Histogram(
            "model_inference_duration_seconds", "Time of the model call alone, by model",
            ["model"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.batch_size = Histogram(
            "model_batch_size", "Images per model call (dynamic batching), by model",
            ["model"], buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.predictions = Counter(
            "model_predictions", "Images predicted, by model", ["model"], registry=self.registry,
        )
        # The model gauges are set by the worker that answers a scrape, just before it renders, so its values are
        # the most recent; another worker's may be as old as its last scrape. Each worker installs versions on its
        # own and converges within MODEL_POLL_S, so the answering worker's view is the one to report.
        model_state = {"labelnames": ["model"], "registry": self.registry, "multiprocess_mode": "livemostrecent"}
        self.model_ready = Gauge("model_ready", "1 when the model can serve", **model_state)
        self.model_version = Gauge(
            "model_version", "Repository version of the served (or promoted) model", **model_state,
        )
        self.model_accuracy = Gauge("model_test_accuracy", "Test accuracy of the served model", **model_state)
        # Jobs live in the one worker of a trainer (or ROLE=all); a server's workers have none and report 0.
        self.training_jobs = Gauge(
            "training_jobs", "Remembered training jobs by state", ["state"], registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.training_epoch = Gauge("training_epoch", "Epoch of the running job (0 when idle)", registry=self.registry,
                                    multiprocess_mode="livemax")
        self.training_step = Gauge("training_step", "Step of the running job (0 when idle)", registry=self.registry,
                                   multiprocess_mode="livemax")

    def observe_model_call(self, model: str, images: int, seconds: float) -> None:
        """Record one model call (a dynamic batch): its size, its duration, the images it predicted."""
        self.batch_size.labels(model).observe(images)
        self.inference_seconds.labels(model).observe(seconds)
        self.predictions.labels(model).inc(images)


class GatewayMetrics(RequestMetrics):
    """The gateway's metrics: requests, and every call it makes to a service."""

    def __init__(self):
        super().__init__()
        self.backend_seconds = Histogram(
            "backend_call_duration_seconds", "Gateway-to-service call latency, by service and path",
            ["service", "path"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.backend_errors = Counter(
            "backend_call_errors", "Failed gateway-to-service calls, by service and path",
            ["service", "path"], registry=self.registry,
        )
        self.fan_out_batch_size = Histogram(
            "predict_fan_out_batch_size", "Uploads per /predict fan-out (dynamic batching)",
            buckets=BATCH_BUCKETS, registry=self.registry,
        )

    def observe_backend_call(self, service: str, path: str, seconds: float, ok: bool) -> None:
        """Record one call to a service (the path without its query string)."""
        path = bounded_path(path)
        self.backend_seconds.labels(service, path).observe(seconds)
        if not ok:
            self.backend_errors.labels(service, path).inc()
