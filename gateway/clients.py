"""HTTP clients of the framework services: pooled keep-alive connections, timeouts, parallel fan-out."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from servekit.errors import ApiError, NotFound

POOL_SIZE = 32
STATUS_TIMEOUT_S = 3.0
MODELS_TTL_S = 30.0


class ServiceError(Exception):
    """A service call that did not give a usable answer (down, slow, or an error status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    """A service's JSON answer and how long the HTTP round trip took."""

    body: Any
    roundtrip_ms: float


CallObserver = Callable[[str, str, float, bool], None]  # (service, path, seconds, ok)


class ServiceClient:
    """One framework service: a keep-alive session and JSON calls that raise ServiceError."""

    def __init__(self, name: str, url: str, on_call: CallObserver | None = None):
        self.name, self.url = name, url
        self.on_call = on_call or (lambda *args: None)
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE))
        self.session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=POOL_SIZE))

    def call(self, method: str, path: str, timeout: float, headers: dict | None = None, **kwargs) -> Reply:
        """Send a request; the JSON body on 2xx, else ServiceError with the service's own message."""
        started = time.perf_counter()
        try:
            reply = self._call(method, path, timeout, headers, **kwargs)
        except ServiceError as exc:
            self.on_call(self.name, path, time.perf_counter() - started, exc.status is not None and exc.status < 500)
            raise
        self.on_call(self.name, path, time.perf_counter() - started, True)
        return reply

    def _call(self, method: str, path: str, timeout: float, headers: dict | None, **kwargs) -> Reply:
        started = time.perf_counter()
        try:
            response = self.session.request(method, self.url + path, timeout=timeout, headers=headers, **kwargs)
        except requests.Timeout:
            raise ServiceError(f"{self.name} did not answer within {timeout:g} s") from None
        except requests.RequestException as exc:
            raise ServiceError(f"{self.name} is unreachable at {self.url}: {type(exc).__name__}") from None
        roundtrip_ms = (time.perf_counter() - started) * 1000.0
        try:
            body = response.json()
        except ValueError:
            status = response.status_code
            raise ServiceError(f"{self.name} answered {status} without JSON", status) from None
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise ServiceError(f"{self.name}: {message or response.reason}", response.status_code)
        return Reply(body, roundtrip_ms)


class ServiceDirectory:
    """The services the gateway knows, and which of them serves which model."""

    def __init__(self, service_urls: dict[str, str], on_call: CallObserver | None = None):
        self.clients = {name: ServiceClient(name, url, on_call) for name, url in service_urls.items()}
        self._pool = ThreadPoolExecutor(max_workers=max(4, 4 * len(self.clients)), thread_name_prefix="fanout")
        self._models: dict[str, list[str]] = {}  # service -> model names, as last seen
        self._models_seen_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def fan_out(self, work: Callable[[ServiceClient], Any], services: list[str] | None = None) -> dict[str, Any]:
        """Run ``work(client)`` for every (or the named) service in parallel; an exception is the result."""
        names = services if services is not None else list(self.clients)
        futures = {name: self._pool.submit(work, self.clients[name]) for name in names}
        results = {}
        for name, future in futures.items():
            try:
                results[name] = future.result()
            except Exception as exc:  # each service's failure is reported in its own entry
                results[name] = exc
        return results

    def models_of(self, service: str, refresh: bool = False) -> list[str]:
        """The service's model names (cached for a while; the last known names when it is down)."""
        fresh = time.monotonic() - self._models_seen_at.get(service, -1e9) < MODELS_TTL_S
        if refresh or not fresh:
            try:
                body = self.clients[service].call("GET", "/models", STATUS_TIMEOUT_S).body
                with self._lock:
                    self._models[service] = [m["name"] for m in body["models"]]
                    self._models_seen_at[service] = time.monotonic()
            except ServiceError:
                pass
        return list(self._models.get(service, []))

    def all_models(self) -> dict[str, str]:
        """Every known model -> its service, asking services in parallel where the cache is stale."""
        found = self.fan_out(lambda client: self.models_of(client.name))
        return {model: service for service, models in found.items() if isinstance(models, list) for model in models}

    def resolve(self, models: list[str] | None) -> dict[str, list[str]]:
        """Service -> its models among ``models`` (all when None); NotFound for an unknown model."""
        owners = self.all_models()
        wanted = list(owners) if models is None else models
        unknown = [m for m in wanted if m not in owners]
        if unknown:
            known = ", ".join(owners) or "none"
            raise NotFound(f"unknown or unreachable model(s) {', '.join(unknown)}; known: {known}")
        plan: dict[str, list[str]] = {}
        for model in wanted:
            plan.setdefault(owners[model], []).append(model)
        return plan


def as_api_error(exc: ServiceError) -> ApiError:
    """A service's refusal passed on to the gateway's client with the service's status."""
    status = exc.status if exc.status and 400 <= exc.status < 600 else 502
    return ApiError(str(exc), status)
