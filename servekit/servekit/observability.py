"""Per-request bookkeeping shared by every app: request id, Prometheus counters, one JSON access-log line."""

from __future__ import annotations

import logging
import time
import uuid

from flask import Flask, Response, g, request

from .metrics import RequestMetrics

REQUEST_ID_HEADER = "X-Request-ID"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
access_log = logging.getLogger("access")


def instrument(app: Flask, metrics: RequestMetrics) -> None:
    """Give every request an id (the caller's ``X-Request-ID`` or a new one), count it, time it, log it."""

    @app.before_request
    def start_request():
        g.started = time.perf_counter()
        g.request_id = request.headers.get(REQUEST_ID_HEADER) or uuid.uuid4().hex
        metrics.in_flight.inc()
        g.in_flight = True

    @app.teardown_request
    def end_request(_error):
        if g.pop("in_flight", False):  # teardown runs whatever happened, so the gauge never drifts up
            metrics.in_flight.dec()

    @app.after_request
    def finish_request(response: Response):
        seconds = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        method = request.method if request.method in KNOWN_METHODS else "other"  # a label set that stays bounded
        metrics.requests.labels(endpoint, method, str(response.status_code)).inc()
        metrics.request_seconds.labels(endpoint).observe(seconds)
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        access_log.info(
            "%s %s %s", request.method, request.path, response.status_code,
            extra={"method": request.method, "path": request.path, "status": response.status_code,
                   "duration_ms": round(seconds * 1000.0, 3)},
        )
        return response
