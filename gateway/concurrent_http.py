"""Several HTTP requests in flight at once from the calling thread, over libcurl's multi interface (pycurl).

The gateway's /predict asks every service the same question at once. With a
thread per call (urllib3 in a thread pool), each call cost the gateway ~0.6 ms
of Python under the GIL plus thread hand-offs, and the fan-out's wall time grew
with them. libcurl runs all the transfers in C in the calling thread, with the
GIL released while it waits: measured here on the three services' raw-tensor
/predict, a fan-out alone in a loop cost 0.4-0.6 instead of 1.7-2.2 ms of CPU;
the whole gateway, 3.5 instead of 4.2 ms per /predict at c=1 and 1.95 instead
of 2.5 at c=16, where it served 387 instead of 317 req/s (scripts/bench).

Each thread has its own multi handle (whose connection cache keeps the
connections alive between fan-outs) and its own epoll selector, driven through
libcurl's socket interface (``socket_action``): no 1,024-descriptor limit, and
each transfer's timeout fires when libcurl's timer says, not at the next wake-up.
"""

from __future__ import annotations

import selectors
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO

import pycurl

# libcurl codes for "no usable HTTP answer came from there": the request can go to another replica (as urllib3's
# NewConnectionError and ProtocolError: refused, reset, closed before answering, not HTTP).
_UNREACHABLE = {
    pycurl.E_COULDNT_RESOLVE_HOST: "NameResolutionError",
    pycurl.E_COULDNT_CONNECT: "NewConnectionError",
    pycurl.E_GOT_NOTHING: "RemoteDisconnected",
    pycurl.E_SEND_ERROR: "ConnectionResetError",
    pycurl.E_RECV_ERROR: "ConnectionResetError",
    pycurl.E_PARTIAL_FILE: "IncompleteRead",
    pycurl.E_FTP_WEIRD_SERVER_REPLY: "BadStatusLine",  # 8: CURLE_WEIRD_SERVER_REPLY (pycurl has the old name)
}
_IDLE_WAIT_S = 1.0  # longest wait when libcurl has no timer running


@dataclass
class Outgoing:
    """One request: where, what, and how long to wait for the connection and for the whole answer."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    timeout_s: float
    connect_timeout_s: float


@dataclass
class Answer:
    """An HTTP answer (any status) and how long its transfer took."""

    status: int
    data: bytes
    seconds: float


@dataclass(eq=False)
class TransportFailure(Exception):
    """No HTTP answer. ``unreachable``: the request never reached the server (refused, reset, no connection in
    time), so another replica may take it; ``timed_out``: the server has it but did not answer in time."""

    kind: str
    unreachable: bool = False
    timed_out: bool = False
    seconds: float = 0.0
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


FollowUp = Callable[[int, "TransportFailure"], "Outgoing | None"]

_WATCHED = object()  # assigned to each socket we watch: libcurl hands it back with every later call for it
_SLACK_S = 5.0  # beyond the longest request timeout: libcurl enforces those; this only guards against a stall


class _Broken(Exception):
    """The transport failed itself (a callback raised, libcurl refused, nothing finished in time)."""


class _ThreadTransport:
    """A thread's multi handle and the selector that watches the sockets libcurl asks it to."""

    def __init__(self):
        self.multi = pycurl.CurlMulti()
        self.selector = selectors.DefaultSelector()
        self.timer_due: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT), perf_counter time
        self.error: BaseException | None = None  # raised in a callback, where pycurl would only print it
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._set_timer)

    def close(self) -> None:
        self.selector.close()
        self.multi.close()

    def exchange(self, requests: list[Outgoing], follow_up: FollowUp | None, results: list) -> None:
        """Run every request to its end, filling ``results`` (a slot per request) as transfers finish."""
        live: dict[int, tuple[int, pycurl.Curl, BytesIO]] = {}  # id of the handle -> (slot, handle, body)
        try:
            for slot, request in enumerate(requests):
                self._add(live, slot, request)
            deadline = time.perf_counter() + max((r.timeout_s for r in requests), default=0.0) + _SLACK_S
            self._act(pycurl.SOCKET_TIMEOUT, 0)
            while live:
                self._step(deadline)
                for handle, error in self._finished():
                    slot, curl, body = live.pop(id(handle))
                    outcome = _result(curl, body, error)
                    self._drop(curl)
                    retry = follow_up(slot, outcome) if (
                        follow_up and isinstance(outcome, TransportFailure) and outcome.unreachable) else None
                    if retry is None:
                        results[slot] = outcome
                        continue
                    self._add(live, slot, retry)  # at once, while the others are still in flight
                    deadline = max(deadline, time.perf_counter() + retry.timeout_s + _SLACK_S)
                    self._act(pycurl.SOCKET_TIMEOUT, 0)
        finally:
            for _, curl, _ in live.values():
                self._drop(curl)

    def _add(self, live: dict, slot: int, request: Outgoing) -> None:
        curl, body = _start(self.multi, request)
        live[id(curl)] = (slot, curl, body)

    def _drop(self, curl: pycurl.Curl) -> None:
        self.multi.remove_handle(curl)
        curl.close()

    def _step(self, deadline: float) -> None:
        """Wait for socket activity or libcurl's timer, whichever comes first, and let libcurl act on it."""
        now = time.perf_counter()
        if now > deadline:
            raise _Broken("libcurl finished no transfer within the requests' timeouts")
        due = self.timer_due if self.timer_due is not None else now + _IDLE_WAIT_S
        ready = self.selector.select(max(0.0, min(due, deadline) - now))
        if not ready:
            self._act(pycurl.SOCKET_TIMEOUT, 0)
        for key, mask in ready:
            self._act(key.fd, (pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0)
                      | (pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0))

    def _act(self, fd: int, action: int) -> None:
        while True:
            status, _ = self.multi.socket_action(fd, action)
            if self.error is not None:
                raise _Broken(f"{type(self.error).__name__} in a libcurl callback: {self.error}") from self.error
            if status != pycurl.E_CALL_MULTI_PERFORM:
                return

    def _finished(self) -> list[tuple[pycurl.Curl, tuple[int, str] | None]]:
        """The transfers that ended since last asked, each with (libcurl error code, message) or None."""
        done: list[tuple[pycurl.Curl, tuple[int, str] | None]] = []
        while True:
            queued, succeeded, failed = self.multi.info_read()
            done += [(curl, None) for curl in succeeded] + [(curl, (code, msg)) for curl, code, msg in failed]
            if not queued:
                return done

    def _watch(self, what: int, fd: int, multi: pycurl.CurlMulti, watched: object) -> None:
        try:
            if what == pycurl.POLL_REMOVE:  # libcurl is done with the socket (it may be about to close it)
                if fd in self.selector.get_map():
                    self.selector.unregister(fd)
                return
            events = {pycurl.POLL_IN: selectors.EVENT_READ, pycurl.POLL_OUT: selectors.EVENT_WRITE,
                      pycurl.POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE}[what]
            if watched is _WATCHED:
                self.selector.modify(fd, events)
                return
            if fd in self.selector.get_map():  # a closed socket's entry, whose number this new socket reuses
                self.selector.unregister(fd)
            self.selector.register(fd, events)
            multi.assign(fd, _WATCHED)
        except BaseException as exc:  # pycurl would print it and carry on with a socket nobody watches
            self.error = self.error or exc

    def _set_timer(self, ms: int) -> None:
        self.timer_due = None if ms < 0 else time.perf_counter() + ms / 1000.0


_local = threading.local()


def send_all(requests: list[Outgoing], follow_up: FollowUp | None = None) -> list[Answer | TransportFailure]:
    """Send every request at once and wait for all of them; each result is an Answer or a TransportFailure.

    ``follow_up(i, failure)`` is asked when request ``i`` never reached its server (``failure.unreachable``);
    the request it returns (another replica) is sent in its place at once, while the others are in flight.
    ValueError for a header that cannot go on the wire (CR or LF in it, characters beyond Latin-1).
    """
    transport = getattr(_local, "transport", None) or _ThreadTransport()
    _local.transport = transport
    results: list[Answer | TransportFailure | None] = [None] * len(requests)
    try:
        transport.exchange(requests, follow_up, results)
    except ValueError:
        raise  # a header refused before anything of its request was sent: the transport is as it was
    except (_Broken, pycurl.error) as exc:
        _local.transport = None  # its state is unknown: the thread's next call starts afresh
        transport.close()
        failure = TransportFailure("TransportError", detail=str(exc))
        return [result if result is not None else failure for result in results]
    except BaseException:
        _local.transport = None
        transport.close()
        raise
    return results


def _start(multi: pycurl.CurlMulti, request: Outgoing) -> tuple[pycurl.Curl, BytesIO]:
    """A transfer for ``request``, added to ``multi`` only once it is fully set up."""
    curl, buffer = pycurl.Curl(), BytesIO()
    try:
        curl.setopt(pycurl.URL, request.url)
        curl.setopt(pycurl.CUSTOMREQUEST, request.method)
        if request.body is not None:
            curl.setopt(pycurl.POSTFIELDS, request.body)
        elif request.method != "GET":
            curl.setopt(pycurl.POSTFIELDSIZE, 0)
        # "Expect:" off: libcurl would otherwise wait for a "100 Continue" before sending a large body.
        curl.setopt(pycurl.HTTPHEADER, [_header_line(name, value) for name, value in request.headers.items()]
                    + [b"Expect:"])
        curl.setopt(pycurl.WRITEDATA, buffer)
        curl.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(request.connect_timeout_s * 1000)))
        curl.setopt(pycurl.TIMEOUT_MS, max(1, int(request.timeout_s * 1000)))
        curl.setopt(pycurl.NOSIGNAL, 1)  # timeouts without signals: several threads use libcurl
        curl.setopt(pycurl.PROXY, "")  # the services are reached directly, as by urllib3, whatever http_proxy says
        if request.url.lower().startswith("https:"):
            _trust_what_python_trusts(curl)
        multi.add_handle(curl)
    except BaseException:
        curl.close()
        raise
    return curl, buffer


def _header_line(name: str, value: str) -> bytes:
    """``Name: value`` as Latin-1 bytes, as http.client sends headers; CR or LF would smuggle in another."""
    line = f"{name}: {value}"
    if "\r" in line or "\n" in line:
        raise ValueError(f"header {name!r} has a line break in it")
    try:
        return line.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"header {name!r} has characters beyond Latin-1") from None


def _trust_what_python_trusts(curl: pycurl.Curl) -> None:
    """Verify an https service against Python's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured), as the
    urllib3 calls do, not against wherever the wheel's libcurl was built to look."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        curl.setopt(pycurl.CAINFO, paths.cafile)
    if paths.capath:
        curl.setopt(pycurl.CAPATH, paths.capath)


def _result(curl: pycurl.Curl, buffer: BytesIO, error: tuple[int, str] | None) -> Answer | TransportFailure:
    """What became of a finished transfer."""
    seconds = curl.getinfo(pycurl.TOTAL_TIME)
    if error is None:
        return Answer(curl.getinfo(pycurl.RESPONSE_CODE), buffer.getvalue(), seconds)
    code, message = error
    # Whether the server may have the request: bytes of it were sent. (Not CONNECT_TIME, which is also 0 on a
    # reused keep-alive connection.) When libcurl itself sent it again on a fresh connection after a kept-alive
    # one died, the bytes add up: a connect timeout then counts as a read timeout, the safe side (no failover).
    sent = curl.getinfo(pycurl.REQUEST_SIZE) > 0
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if not sent:
            return TransportFailure("ConnectTimeout", unreachable=True, seconds=seconds, detail=message)
        return TransportFailure("ReadTimeout", timed_out=True, seconds=seconds, detail=message)
    if code in _UNREACHABLE:
        return TransportFailure(_UNREACHABLE[code], unreachable=True, seconds=seconds, detail=message)
    return TransportFailure(f"curl error {code}", seconds=seconds, detail=message)
