"""Bounds on the work clients can ask for: a per-client rate on predictions (Flask-Limiter), and ``Slots``
(servekit.slots) for work that must not pile up."""

from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .slots import Slots

__all__ = ["RATE_LIMITED_ENDPOINTS", "Slots", "install_rate_limit"]


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
