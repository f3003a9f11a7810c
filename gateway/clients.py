"""HTTP clients of the framework services: pooled keep-alive connections, timeouts, parallel fan-out."""

from __future__ import annotations

import json as json_module
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from servekit.errors import ApiError, NotFound

from .concurrent_http import Answer, Outgoing, TransportFailure, send_all
from .discovery import Replica, ReplicaSet, Resolver
from .pools import BoundedPool, PoolTimeout

POOL_SIZE = 32  # keep-alive connections per replica
POOL_HOSTS = 64  # replica addresses whose pools are kept
CONNECT_TIMEOUT_S = 2.0
STATUS_TIMEOUT_S = 3.0
MODELS_TTL_S = 30.0
BATCH_RESULT_TIMEOUT_S = 900.0  # an evaluation of the whole test set on a busy machine


class ServiceError(Exception):
    """A service call that did not give a usable answer (down, slow, or an error status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    """A service's JSON answer, how long the HTTP round trip took, and the replica that gave it."""

    body: Any
    roundtrip_ms: float
    replica: str = ""


CallObserver = Callable[[str, str, float, bool], None]  # (service, path, seconds, ok)


class _Unreachable(Exception):
    """This replica gave no HTTP answer (refused, reset, closed, no route): the next replica may."""


class ServiceClient:
    """One framework service: its replicas, keep-alive connections to each, JSON calls that raise ServiceError.

    Each request goes to the next replica in round-robin; one that cannot be connected to is taken out and
    the request is sent to the next one.
    """

    def __init__(
        self,
        name: str,
        urls: str | list[str],
        on_call: CallObserver | None = None,
        refresh_s: float = 5.0,
        retry_down_s: float = 2.0,
        resolver: Resolver | None = None,
        token: str | None = None,
    ):
        self.replica_set = ReplicaSet(name, urls, refresh_s, retry_down_s, resolver)
        self.name, self.url = name, self.replica_set.base_urls[0]
        self.on_call = on_call or (lambda *args: None)
        # One keep-alive pool per replica address, each as deep as the fan-out. urllib3 itself, not requests:
        # a profile of the gateway's /predict showed requests' per-call preparation (and its ~/.netrc and
        # proxy lookups) costing more CPU than the rest of the hop.
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}  # SERVICE_TOKEN: on users' behalf
        self.pool = urllib3.PoolManager(num_pools=POOL_HOSTS, maxsize=POOL_SIZE, retries=False)

    def replicas(self) -> list[Replica]:
        """The service's replicas as currently resolved, with their up/down state."""
        return self.replica_set.replicas()

    def call(self, method: str, path: str, timeout: float, headers: dict | None = None, **kwargs) -> Reply:
        """Send a request; the JSON body on 2xx, else ServiceError with the service's own message.

        A replica that cannot be connected to is marked down and the request goes to the next one; a
        timeout is raised (the replica may be doing the work), as is an error status (that is an answer).
        """
        started = time.perf_counter()
        try:
            reply = self._call(method, path, timeout, headers, **kwargs)
        except ServiceError as exc:
            self._observe(path, started, exc)
            raise
        self._observe(path, started, None)
        return reply

    def call_replica(self, replica_url: str, method: str, path: str, timeout: float, **kwargs) -> Reply:
        """Send a request to one given replica (its URL as in ``replicas()``), without trying any other."""
        started = time.perf_counter()
        known = {r.url: r for r in self.replica_set.replicas()}
        replica = known.get(replica_url.rstrip("/"), Replica(replica_url.rstrip("/")))
        try:
            reply = self._attempt(replica, method, path, timeout, **kwargs)
        except _Unreachable as exc:
            error = ServiceError(f"{self.name} is unreachable at {replica.url}: {exc}")
            self._observe(path, started, error)
            raise error from None
        except ServiceError as exc:
            self._observe(path, started, exc)
            raise
        self._observe(path, started, None)
        return reply

    def _observe(self, path: str, started: float, error: ServiceError | None) -> None:
        self.observe(path, time.perf_counter() - started, error)

    def observe(self, path: str, seconds: float, error: ServiceError | None) -> None:
        """Tell ``on_call`` (the gateway's metrics) how a call went: an error status below 500 is an answer."""
        ok = error is None or (error.status is not None and error.status < 500)
        self.on_call(self.name, path, seconds, ok)

    def _call(self, method: str, path: str, timeout: float, headers: dict | None, **kwargs) -> Reply:
        started = time.perf_counter()
        order = self.replica_set.order()
        tried, errors = [], []
        for replica in order:
            if tried and time.perf_counter() - started >= timeout:
                break  # the caller's time is up (replicas that took the whole connect timeout each)
            try:
                return self._attempt(replica, method, path, timeout, headers=headers, **kwargs)
            except _Unreachable as exc:
                tried.append(replica.url)
                errors.append(str(exc))
        raise self.unreachable_error(order, tried, errors)

    def unreachable_error(self, order: list[Replica], tried: list[str], errors: list[str]) -> ServiceError:
        """The error of a call that no replica answered: where it was tried, and why each gave no answer."""
        where = ", ".join(tried)
        if len(order) > 1:
            where += f" ({len(tried)} of {len(order)} replicas tried)"
        addresses = {replica.url for replica in order}
        resolved_from = [url for url in self.replica_set.base_urls if url not in addresses]
        if resolved_from:
            where += f", resolved from {', '.join(resolved_from)}"
        return ServiceError(f"{self.name} is unreachable at {where}: {', '.join(dict.fromkeys(errors))}")

    def outgoing(self, replica: Replica, method: str, path: str, timeout: float, headers: dict | None,
                 data: bytes | None) -> Outgoing:
        """The request ``_attempt`` would send to ``replica``, for sending with others at once (send_all)."""
        return Outgoing(method, replica.url + path, {**self.headers, **(headers or {})}, data, timeout,
                        min(timeout, CONNECT_TIMEOUT_S))

    def settle(self, replica: Replica, outcome: Answer | TransportFailure, timeout: float) -> Reply:
        """What a replica's send_all outcome means, with _attempt's errors and replica marks: the Reply,
        ServiceError, or _Unreachable when the request never reached it (another replica may take it)."""
        if isinstance(outcome, Answer):
            return self._answered(replica, outcome.status, outcome.data, outcome.seconds * 1000.0,
                                  _reason(outcome.status))
        if outcome.timed_out:
            self.replica_set.mark_failed(replica, f"no answer within {timeout:g} s")
            raise ServiceError(f"{self.name} did not answer within {timeout:g} s (at {replica.url})")
        self.replica_set.mark_failed(replica, outcome.kind)
        if outcome.unreachable:
            raise _Unreachable(outcome.kind)
        raise ServiceError(f"{self.name} failed at {replica.url}: {outcome}")

    def _attempt(self, replica: Replica, method: str, path: str, timeout: float, headers: dict | None = None,
                 json: Any = None, data: bytes | None = None) -> Reply:
        """One request to one replica; _Unreachable when it gave no HTTP answer, so another replica may."""
        started = time.perf_counter()
        body, headers = _encode(json, data, {**self.headers, **(headers or {})})
        try:
            # A connect that takes long means no replica there (a vanished container's address): the request
            # was never sent, so the next replica gets it after a short wait rather than the whole timeout.
            response = self.pool.request(
                method, replica.url + path, body=body, headers=headers, redirect=False,
                timeout=urllib3.Timeout(connect=min(timeout, CONNECT_TIMEOUT_S), read=timeout),
            )
        except ConnectTimeoutError:
            self.replica_set.mark_failed(replica, "ConnectTimeout")
            raise _Unreachable("ConnectTimeout") from None
        except (ReadTimeoutError, TimeoutError):
            # Not retried: the replica may still be doing the work (a train must not start twice), and the
            # caller's time is spent anyway.
            self.replica_set.mark_failed(replica, f"no answer within {timeout:g} s")
            raise ServiceError(f"{self.name} did not answer within {timeout:g} s (at {replica.url})") from None
        # Refused, no route, reset or closed before or while answering: the replica is gone, and the request
        # goes to the next one (at worst run twice, like a client's own retry after a reset).
        except (NewConnectionError, ProtocolError, OSError) as exc:
            self.replica_set.mark_failed(replica, type(exc).__name__)
            raise _Unreachable(type(exc).__name__) from None
        except HTTPError as exc:
            self.replica_set.mark_failed(replica, type(exc).__name__)
            raise ServiceError(f"{self.name} failed at {replica.url}: {type(exc).__name__}") from None
        roundtrip_ms = (time.perf_counter() - started) * 1000.0
        return self._answered(replica, response.status, response.data, roundtrip_ms, response.reason)

    def _answered(self, replica: Replica, status: int, data: bytes, roundtrip_ms: float, reason: str) -> Reply:
        """A replica's HTTP answer as a Reply; ServiceError (with the service's message) for an error status."""
        self.replica_set.mark_ok(replica)  # any HTTP answer, error statuses included, means it is up
        try:
            answer = json_module.loads(data)
        except ValueError:
            raise ServiceError(f"{self.name} answered {status} without JSON", status) from None
        if status >= 400:
            message = answer.get("error") if isinstance(answer, dict) else None
            raise ServiceError(f"{self.name}: {message or reason}", status)
        return Reply(answer, roundtrip_ms, replica.url)


@dataclass
class _Tries:
    """A service's replicas in the order to try them for one request, those tried, and the time it took."""

    order: list[Replica]
    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def next_replica(self) -> Replica | None:
        return self.order[len(self.urls)] if len(self.urls) < len(self.order) else None

    def failed(self, failure: TransportFailure) -> None:
        """The next replica gave no answer: on to the one after it."""
        self.urls.append(self.order[len(self.urls)].url)
        self.errors.append(failure.kind)
        self.seconds += failure.seconds


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"status {status}"


def _encode(json_body: Any, data: bytes | None, headers: dict) -> tuple[bytes | None, dict]:
    """The request body and headers: JSON encoded here, or raw bytes as given."""
    if json_body is not None:
        return json_module.dumps(json_body).encode(), {"Content-Type": "application/json", **headers}
    return data, headers


class ServiceDirectory:
    """The services the gateway knows, and which of them serves which model."""

    def __init__(
        self, service_urls: dict[str, str | list[str]], on_call: CallObserver | None = None, refresh_s: float = 5.0,
        trainer_urls: dict[str, str | list[str]] | None = None, token: str | None = None,
        interactive_timeout_s: float = 10.0, interactive_threads: int = 16,
    ):
        self.clients = {
            name: ServiceClient(name, urls, on_call, refresh_s=refresh_s, token=token)
            for name, urls in service_urls.items()
        }
        # Without TRAINER_URLS the servers train too (ROLE=all, as `make run` starts them).
        self.trainers = self.clients if trainer_urls is None else {
            name: ServiceClient(f"{name}-trainer", urls, on_call, refresh_s=refresh_s, token=token)
            for name, urls in trainer_urls.items()
        }
        # Interactive: every request thread's calls to all services but one (that one runs in the request thread).
        services = max(1, len(self.clients))
        self.pools = {
            "interactive": BoundedPool("interactive", max(4, interactive_threads * (services - 1)),
                                       queue_limit=8 * interactive_threads, timeout_s=interactive_timeout_s),
            "batch": BoundedPool("batch", 2 * services, queue_limit=4 * services, timeout_s=BATCH_RESULT_TIMEOUT_S),
        }
        self._models: dict[str, list[str]] = {}  # service -> model names, as last seen
        self._models_seen_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def fan_out(self, work: Callable[[ServiceClient], Any], services: list[str] | None = None,
                pool: str = "interactive") -> dict[str, Any]:
        """Run ``work(client)`` for every (or the named) service in parallel; an exception is the result.

        ``pool``: "interactive" (answers people wait for) or "batch" (long work such as evaluations); the
        last service's work runs in the calling thread, which would otherwise only wait. ApiError 503 when
        the pool is full; a service whose work gave no result in the pool's time gets a ServiceError.
        """
        names = services if services is not None else list(self.clients)
        if not names:
            return {}
        chosen = self.pools[pool]
        futures = {name: chosen.submit(work, self.clients[name]) for name in names[:-1]}
        results = {}
        try:
            results[names[-1]] = work(self.clients[names[-1]])
        except Exception as exc:  # each service's failure is reported in its own entry
            results[names[-1]] = exc
        for name, future in futures.items():
            try:
                results[name] = chosen.result(future)
            except PoolTimeout as exc:
                results[name] = ServiceError(f"{name}: {exc}")
            except Exception as exc:
                results[name] = exc
        return {name: results[name] for name in names}

    def post_to_each(self, path: str, body: bytes, headers: dict, timeout: float,
                     services: list[str] | None = None) -> dict[str, Reply | Exception]:
        """The same POST to every (or the named) service at once, all in flight together from the calling
        thread (concurrent_http: no pool threads); each service's Reply, or the exception ``call`` would raise.

        As with ``call``, a replica that the request never reached is followed by the service's next one, sent
        at once while the other services' calls are still in flight, until its replicas are all tried or
        ``timeout`` has passed since the fan-out began.
        """
        started = time.perf_counter()
        names = list(services if services is not None else self.clients)
        tries = [_Tries(self.clients[name].replica_set.order()) for name in names]

        def request(slot: int) -> Outgoing:
            replica = tries[slot].next_replica()
            return self.clients[names[slot]].outgoing(replica, "POST", path, timeout, headers, body)

        def follow_up(slot: int, failure: TransportFailure) -> Outgoing | None:
            tried = tries[slot]
            self.clients[names[slot]].replica_set.mark_failed(tried.next_replica(), failure.kind)
            tried.failed(failure)
            if tried.next_replica() is None or time.perf_counter() - started >= timeout:
                return None
            return request(slot)

        try:
            outcomes = send_all([request(slot) for slot in range(len(names))], follow_up)
        except ValueError as exc:  # a header that cannot be sent: the same for every service
            return {name: ServiceError(f"{name}: {exc}") for name in names}
        results: dict[str, Reply | Exception] = {}
        for name, tried, outcome in zip(names, tries, outcomes, strict=True):
            client = self.clients[name]
            if isinstance(outcome, TransportFailure) and outcome.unreachable:  # follow_up has marked them all
                results[name] = client.unreachable_error(tried.order, tried.urls, tried.errors)
            else:
                tried.seconds += outcome.seconds
                try:
                    results[name] = client.settle(tried.next_replica(), outcome, timeout)
                except ServiceError as exc:
                    results[name] = exc
            error = results[name]
            client.observe(path, tried.seconds, error if isinstance(error, ServiceError) else None)
        return results

    def trainer(self, service: str) -> ServiceClient:
        """The client of the service's trainer; NotFound when TRAINER_URLS names none for it."""
        if service not in self.trainers:
            raise NotFound(f"no trainer is configured for {service}; set TRAINER_URLS")
        return self.trainers[service]

    def owner(self, model: str) -> str:
        """The service that serves ``model``; NotFound for an unknown model."""
        return next(iter(self.resolve([model])))

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
        if models is None:  # "every model": only when every service has told which models it has
            unseen = [name for name in self.clients if name not in self._models]
            if unseen or not owners:
                raise ApiError(f"{', '.join(unseen) or 'no service'} has not answered yet, so its models are "
                               "unknown; try again when it is up, or name the models in 'models'", 503)
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
