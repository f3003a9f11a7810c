"""Request checks and response headers that keep browsers from being used against a service.

- ``ALLOWED_HOSTS``: any other Host header is a 400, so a DNS-rebinding page cannot talk to a local
  gateway under its own name (health probes are exempt: orchestrators probe by pod address).
- A state-changing request (POST, PUT, PATCH, DELETE) from another site is a 403: its ``Origin``
  must be this host, and ``Sec-Fetch-Site`` must not say cross-site or same-site.
- A POST must say ``Content-Type: application/json``, even with an empty body (else 415): a plain
  HTML form cannot send that, so it cannot start a training. Views that take uploads or untyped
  tensors are marked with ``accepts_any_media_type``.
- Every response carries a Content-Security-Policy allowing only this origin, no framing,
  ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Flask, request

from .errors import ApiError, UnsupportedMediaType

UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
PROBE_PATHS = {"/health", "/health/live", "/v2/health/live", "/v2/health/ready"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")


def accepts_any_media_type(view: Callable) -> Callable:
    """Mark a POST view that reads uploads or untyped bodies itself (and refuses what it cannot read)."""
    view.accepts_any_media_type = True
    return view


def parse_allowed_hosts(text: str | None, bind_host: str | None = None) -> list[str] | None:
    """ALLOWED_HOSTS ('a.example,localhost' or '*') -> host names; None allows any.

    Unset: the localhost names plus the bind address when it is a specific one.
    """
    if text is not None and text.strip():
        hosts = [h.strip().lower() for h in text.split(",") if h.strip()]
        return None if "*" in hosts else hosts
    hosts = list(LOCAL_HOSTS)
    if bind_host and bind_host not in ("0.0.0.0", "::", ""):
        hosts.append(bind_host.lower())
    return hosts


def install_web_security(app: Flask, allowed_hosts: list[str] | None) -> None:
    """Refuse foreign Host headers, cross-site writes and non-JSON POSTs; add the security headers."""

    @app.before_request
    def check_request():
        if allowed_hosts is not None and request.path not in PROBE_PATHS:
            host = _host_name(request.host)
            if host not in allowed_hosts:
                raise ApiError(f"Host {host!r} is not allowed here; add it to ALLOWED_HOSTS", 400)
        if request.method not in UNSAFE_METHODS:
            return
        fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
        origin = request.headers.get("Origin")
        if fetch_site in ("cross-site", "same-site") or (origin is not None and not _same_origin(origin)):
            raise ApiError(f"cross-site requests are refused (Origin {origin or '-'}, Sec-Fetch-Site "
                           f"{fetch_site or '-'})", 403)
        view = app.view_functions.get(request.endpoint) if request.endpoint else None
        if request.method == "POST" and not getattr(view, "accepts_any_media_type", False) and not request.is_json:
            raise UnsupportedMediaType("send the request with Content-Type: application/json (an empty body "
                                       "may be {})")

    @app.after_request
    def add_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _host_name(host: str) -> str:
    """'Example.com:8000' -> 'example.com'; '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
