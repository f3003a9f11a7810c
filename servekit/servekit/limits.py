"""Bounds on the work clients can ask for: a per-client rate on predictions (Flask-Limiter), and
``Slots`` for work that must not pile up (one benchmark at a time, a few evaluations at a time)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .errors import ApiError

RATE_LIMITED_ENDPOINTS = ("predict", "v2.infer")


def install_rate_limit(app: Flask, rate: str | None) -> Limiter | None:
    """Limit each client's predictions to ``rate`` (e.g. "20/second;600/minute"); None or "" turns it off.

    Off by default, so that HTTP benchmarks measure the service rather than the limit. Counters live in
    each process's memory: with several gunicorn workers each allows the rate.
    """
    if not rate:
        return None
    limiter = Limiter(get_remote_address, app=app, headers_enabled=True, storage_uri="memory://")
    for endpoint in RATE_LIMITED_ENDPOINTS:
        view = app.view_functions.get(endpoint)
        if view is not None:
            app.view_functions[endpoint] = limiter.limit(rate)(view)
    return limiter


class Slots:
    """At most ``size`` of one kind of work at once; a request beyond that is refused, not queued."""

    def __init__(self, size: int, what: str, status: int = 429, retry_after_s: int = 5):
        self._free = threading.BoundedSemaphore(size)
        self.size, self.what, self.status, self.retry_after_s = size, what, status, retry_after_s

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block; ApiError (409 or 429, with Retry-After) when none is free."""
        if not self._free.acquire(blocking=False):
            raise ApiError(f"{self.size} {self.what} already running; try again when one has finished",
                           self.status, headers={"Retry-After": str(self.retry_after_s)})
        try:
            yield
        finally:
            self._free.release()
