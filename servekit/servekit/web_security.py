"""Request checks and response headers that keep browsers from being used against a service.

- ``ALLOWED_HOSTS``: any other Host header is a 400, so a DNS-rebinding page cannot talk to a local
  gateway or service under its own name (health probes are exempt: orchestrators probe by pod address).
  A framework service also answers to any IP address (the gateway calls replicas by address) and to its
  own names (``ServiceHosts``).
- A state-changing request (POST, PUT, PATCH, DELETE) from another site is a 403: its ``Origin``
  must be this host, and ``Sec-Fetch-Site`` must not say cross-site or same-site.
- A POST must say ``Content-Type: application/json``, even with an empty body (else 415): a plain
  HTML form cannot send that, so it cannot start a training. Views that take uploads or untyped
  tensors are marked with ``accepts_any_media_type``.
- Every response carries a Content-Security-Policy allowing only this origin, no framing,
  ``nosniff`` and ``no-referrer``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Container
from dataclasses import dataclass
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


@dataclass(frozen=True)
class ServiceHosts:
    """The Host names a framework service answers to: ``host in ServiceHosts(...)``.

    The localhost names, any IP address (the gateway resolves every replica and calls it by address; a
    rebinding page's Host is a domain name, never an address), the exact ``names``, and the Kubernetes
    Service names of ``cluster_names``: ``<name>.<namespace>.svc`` and ``<name>.<namespace>.svc.cluster.local``.
    """

    names: frozenset[str]
    cluster_names: frozenset[str] = frozenset()

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        return host in self.names or host in LOCAL_HOSTS or _is_ip_address(host) or self._is_cluster_name(host)

    def _is_cluster_name(self, host: str) -> bool:
        match = re.fullmatch(r"([a-z0-9-]+)\.[a-z0-9-]+\.svc(\.cluster\.local)?", host)
        return bool(match) and match.group(1) in self.cluster_names


def service_hosts(text: str | None, service_name: str, hostname: str) -> ServiceHosts | None:
    """A framework service's allowed Host names; ALLOWED_HOSTS (``text``) adds names, ``*`` allows any (None).

    Its own names are the ones compose, Swarm and Kubernetes reach a framework by: ``<service_name>`` (the
    servers) and ``<service_name>-trainer``, Swarm's ``tasks.`` names of both, their Kubernetes Service names,
    and the machine's ``hostname`` (a container's, a pod's).
    """
    extra = [h.strip().lower() for h in (text or "").split(",") if h.strip()]
    if "*" in extra:
        return None
    own = {service_name.lower(), f"{service_name.lower()}-trainer"}
    names = own | {f"tasks.{name}" for name in own} | {hostname.lower()} | set(extra)
    return ServiceHosts(frozenset(names), frozenset(own))


def install_web_security(app: Flask, allowed_hosts: Container[str] | None) -> None:
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


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) names no other host
    except ValueError:
        return False
    return True


def _same_origin(origin: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
