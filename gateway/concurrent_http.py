"""Several HTTP requests in flight at once from the calling thread, over libcurl's multi interface (pycurl).

The gateway's /predict asks every service the same question at once. With a
thread per call (urllib3 in a thread pool), each call cost the gateway ~0.6 ms
of Python under the GIL plus thread hand-offs, and the fan-out's wall time grew
with them. libcurl runs all the transfers in C in the calling thread, with the
GIL released while it waits: measured here on the three services' raw-tensor
/predict, 0.4 instead of 1.7-2.2 ms of gateway CPU per fan-out, and a p50 of
5.1-5.5 instead of 6.8-8.5 ms.

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


class _ThreadTransport:
    """A thread's multi handle and the selector that watches the sockets libcurl asks it to."""

    def __init__(self):
        self.multi = pycurl.CurlMulti()
        self.selector = selectors.DefaultSelector()
        self.timer_due: float | None = None  # when libcurl wants socket_action(SOCKET_TIMEOUT), perf_counter time
        self.multi.setopt(pycurl.M_SOCKETFUNCTION, self._watch)
        self.multi.setopt(pycurl.M_TIMERFUNCTION, self._set_timer)

    def _watch(self, what: int, fd: int, multi, data) -> None:
        events = {pycurl.POLL_IN: selectors.EVENT_READ, pycurl.POLL_OUT: selectors.EVENT_WRITE,
                  pycurl.POLL_INOUT: selectors.EVENT_READ | selectors.EVENT_WRITE}.get(what, 0)
        if fd in self.selector.get_map():
            if not events:  # POLL_REMOVE: libcurl is done with the socket (it may be about to close it)
                self.selector.unregister(fd)
                return
            try:
                self.selector.modify(fd, events)
                return
            except OSError:  # a number reused by a new socket after a close: the selector has let go of it
                pass
        if events:
            self.selector.register(fd, events)

    def _set_timer(self, ms: int) -> None:
        self.timer_due = None if ms < 0 else time.perf_counter() + ms / 1000.0

    def run(self) -> None:
        """Drive every transfer added to the multi handle to its end."""
        running = self._act(pycurl.SOCKET_TIMEOUT, 0)
        while running:
            wait = _IDLE_WAIT_S if self.timer_due is None else min(self.timer_due - time.perf_counter(), _IDLE_WAIT_S)
            ready = self.selector.select(max(0.0, wait))
            if not ready:
                running = self._act(pycurl.SOCKET_TIMEOUT, 0)
            for key, mask in ready:
                action = ((pycurl.CSELECT_IN if mask & selectors.EVENT_READ else 0)
                          | (pycurl.CSELECT_OUT if mask & selectors.EVENT_WRITE else 0))
                running = self._act(key.fd, action)

    def _act(self, fd: int, action: int) -> int:
        while True:
            status, running = self.multi.socket_action(fd, action)
            if status != pycurl.E_CALL_MULTI_PERFORM:
                return running

    def failures(self) -> dict[int, tuple[int, str]]:
        """The transfers that failed: id of the handle -> (libcurl error code, message)."""
        failed: dict[int, tuple[int, str]] = {}
        while True:
            queued, _, errors = self.multi.info_read()
            for curl, code, message in errors:
                failed[id(curl)] = (code, message)
            if not queued:
                return failed


_local = threading.local()


def send_all(requests: list[Outgoing]) -> list[Answer | TransportFailure]:
    """Send every request at once and wait for all of them; each result is an Answer or a TransportFailure.

    ValueError for a header that cannot go on the wire (CR or LF in it, characters beyond Latin-1).
    """
    transport = _thread_transport()
    transfers: list[tuple[pycurl.Curl, BytesIO]] = []
    try:
        for request in requests:
            transfers.append(_start(transport.multi, request))
        transport.run()
        failed = transport.failures()
        return [_result(curl, buffer, failed.get(id(curl))) for curl, buffer in transfers]
    finally:
        for curl, _ in transfers:
            transport.multi.remove_handle(curl)
            curl.close()


def _thread_transport() -> _ThreadTransport:
    transport = getattr(_local, "transport", None)
    if transport is None:
        transport = _local.transport = _ThreadTransport()
    return transport


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
    seconds = curl.getinfo(pycurl.TOTAL_TIME)
    if error is None:
        return Answer(curl.getinfo(pycurl.RESPONSE_CODE), buffer.getvalue(), seconds)
    code, message = error
    # Whether the server may have the request: bytes of it were sent. (Not CONNECT_TIME, which is also 0 on a
    # reused keep-alive connection.)
    sent = curl.getinfo(pycurl.REQUEST_SIZE) > 0
    if code == pycurl.E_OPERATION_TIMEDOUT:
        if not sent:
            return TransportFailure("ConnectTimeout", unreachable=True, seconds=seconds, detail=message)
        return TransportFailure("ReadTimeout", timed_out=True, seconds=seconds, detail=message)
    if code in _UNREACHABLE:
        return TransportFailure(_UNREACHABLE[code], unreachable=True, seconds=seconds, detail=message)
    return TransportFailure(f"curl error {code}", seconds=seconds, detail=message)
