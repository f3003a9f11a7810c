"""Service replicas found by DNS: one service name -> every address it resolves to, with up/down state.

`docker compose --scale torch=3`, Swarm's `tasks.torch` and Kubernetes headless Services all answer one
name with one A/AAAA record per replica. A ReplicaSet turns a service's base URLs into one URL per address,
re-resolves them every few seconds, and chooses which replica gets each request.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Resolver = Callable[[str, int], list[str]]  # (host, port) -> IP addresses


@dataclass
class Replica:
    """One address of a service, e.g. "http://172.18.0.5:8002", and whether it is taking requests."""

    url: str
    up: bool = True
    failures: int = 0  # consecutive failures
    down_since: float | None = None
    last_error: str | None = None


def parse_service_map(text: str) -> dict[str, list[str]]:
    """'torch=http://a:8002,torch=http://b:8002,tf=http://tf:8003' -> {"torch": [a, b], "tf": [tf]}."""
    services: dict[str, list[str]] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, url = (part.strip() for part in item.partition("="))
        url = url.rstrip("/")
        if not sep or not name or not url:
            raise ValueError(f"SERVICE_URLS entry {item.strip()!r} is not name=url")
        try:
            check_url(url)
        except ValueError as exc:
            raise ValueError(f"SERVICE_URLS entry {item.strip()!r}: {exc}") from None
        urls = services.setdefault(name, [])
        if url not in urls:
            urls.append(url)
    return services


def check_url(url: str) -> None:
    """ValueError unless ``url`` is http(s)://host[:port][/path]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    except ValueError:
        raise ValueError(f"{url!r} has a bad port") from None


def resolve_host(host: str, port: int) -> list[str]:
    """Every IPv4 and IPv6 address of ``host`` (socket.gaierror when it has none)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _address_key(address: str) -> tuple:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return ip.version, int(ip), address


def _with_host(base_url: str, address: str) -> str:
    """``base_url`` with its host replaced by ``address`` (IPv6 in brackets, a zone id %-encoded)."""
    parts = urlsplit(base_url)
    host = f"[{address.replace('%', '%25')}]" if ":" in address else address
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class ReplicaSet:
    """The replicas behind one service's base URLs, re-resolved every `refresh_s`."""

    def __init__(
        self,
        name: str,
        urls: list[str] | str,
        refresh_s: float = 5.0,
        retry_down_s: float = 2.0,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        urls = [urls] if isinstance(urls, str) else list(urls)
        if not urls:
            raise ValueError(f"service {name!r} has no URL")
        self.name = name
        self.base_urls = [url.rstrip("/") for url in urls]
        for url in self.base_urls:
            check_url(url)
        self.refresh_s, self.retry_down_s = refresh_s, retry_down_s
        self._resolver = resolver or resolve_host
        self._clock = clock
        self._replicas: dict[str, Replica] = {}  # replica URL -> replica, in resolution order
        self._from_base: dict[str, list[str]] = {}  # base URL -> its replica URLs, as last resolved
        self._resolved_at: float | None = None
        self._next = 0  # round-robin position
        self._lock = threading.Lock()  # guards every field above and every Replica's state
        self._refresh_lock = threading.Lock()  # one resolution at a time, outside _lock (DNS can be slow)

    def replicas(self) -> list[Replica]:
        """The current replicas (re-resolving first when `refresh_s` has passed)."""
        self._refresh_if_due()
        with self._lock:
            return list(self._replicas.values())

    def refresh(self) -> None:
        """Resolve every base URL now: keep the replicas still there (with their state), add new, drop gone."""
        with self._refresh_lock:
            self._refresh()

    def pick(self) -> Replica:
        """The replica for the next request: round-robin over the up ones.

        A down replica is offered again (half-open, one request per `retry_down_s`) once `retry_down_s`
        has passed since it went down, so it rejoins as soon as it answers. When none is up, round-robin
        over all of them.
        """
        return self.order()[0]

    def order(self) -> list[Replica]:
        """Every replica, in the order to try them for one request: pick() first, then the up ones, then the down."""
        self._refresh_if_due()
        with self._lock:
            replicas = list(self._replicas.values())
            now = self._clock()
            due = [r for r in replicas if not r.up and now - (r.down_since or 0.0) >= self.retry_down_s]
            candidates = [r for r in replicas if r.up or r in due] or replicas
            chosen = candidates[self._next % len(candidates)]
            self._next += 1
            if chosen in due:
                chosen.down_since = now  # a lease: the next probe of it waits another retry_down_s
            start = replicas.index(chosen)
            rotated = replicas[start + 1 :] + replicas[:start]  # spreads the retries too
            return [chosen] + [r for r in rotated if r.up] + [r for r in rotated if not r.up]

    def mark_ok(self, replica: Replica) -> None:
        """The replica answered: it is up."""
        with self._lock:
            replica.up, replica.failures = True, 0
            replica.down_since = replica.last_error = None

    def mark_failed(self, replica: Replica, error: str) -> None:
        """The replica did not answer: take it out until it has been down for `retry_down_s`."""
        with self._lock:
            replica.up = False
            replica.failures += 1
            replica.down_since = self._clock()
            replica.last_error = error

    def _refresh_if_due(self) -> None:
        with self._lock:
            first = self._resolved_at is None
            due = first or self._clock() - self._resolved_at >= self.refresh_s
        if not due:
            return
        # The first resolution is awaited by everyone; later ones by nobody: the others use the current set.
        if not self._refresh_lock.acquire(blocking=first):
            return
        try:
            with self._lock:
                still_due = self._resolved_at is None or self._clock() - self._resolved_at >= self.refresh_s
            if still_due:
                self._refresh()
        finally:
            self._refresh_lock.release()

    def _refresh(self) -> None:
        found = {base: self._resolve(base) for base in self.base_urls}
        with self._lock:
            wanted: list[str] = []
            for base, urls in found.items():
                # A DNS blip must not empty the set: keep what this URL gave last time, else the URL as written.
                urls = urls or self._from_base.get(base) or [base]
                self._from_base[base] = urls
                wanted.extend(url for url in urls if url not in wanted)
            self._replicas = {url: self._replicas.get(url) or Replica(url) for url in wanted}
            self._resolved_at = self._clock()

    def _resolve(self, base_url: str) -> list[str]:
        """One URL per address of the base URL's host; [] when it does not resolve."""
        parts = urlsplit(base_url)
        host = parts.hostname
        # An IP is itself; https keeps its name, which the certificate is checked against.
        if not host or _is_ip(host) or parts.scheme == "https":
            return [base_url]
        port = parts.port or 80
        try:
            addresses = self._resolver(host, port)
        except (OSError, UnicodeError):  # socket.gaierror is an OSError
            return []
        unique = set()
        for address in addresses:
            try:
                _address_key(address)
            except ValueError:
                continue
            unique.add(address)
        return [_with_host(base_url, address) for address in sorted(unique, key=_address_key)]
