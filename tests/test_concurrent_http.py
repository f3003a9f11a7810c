"""The gateway's concurrent HTTP sender (libcurl multi) against real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import json
import selectors
import socket
import ssl
import subprocess
import threading
import time

import pytest

from gateway.clients import ServiceDirectory, ServiceError
from gateway.concurrent_http import Answer, Outgoing, TransportFailure, send_all


class Handler(http.server.BaseHTTPRequestHandler):
    """POST echoes what it got as JSON (the body as Latin-1 text); /together answers only once every server of
    the test has its request; /missing is a JSON 404; /silent never answers; anything waits ``server.delay`` s;
    /hangup closes the connection without a word."""

    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn and waitress
    timeout = 3  # an idle kept-alive connection is closed, so that none outlives its test

    def do_POST(self):
        self.server.client_ports.add(self.client_address[1])
        self.server.arrivals.append(time.perf_counter())
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/silent":
            self.server.release.wait(10)
            return
        if self.path == "/hangup":
            self.close_connection = True
            return
        time.sleep(self.server.delay)
        status, answer = 200, {"body": body.decode("latin-1"), "auth": self.headers.get("Authorization"),
                               "id": self.headers.get("X-Request-ID"), "expect": self.headers.get("Expect")}
        if self.path == "/together":
            try:
                self.server.barrier.wait()
            except threading.BrokenBarrierError:
                status, answer = 503, {"error": "the requests did not arrive together"}
        elif self.path == "/missing":
            status, answer = 404, {"error": "no such thing"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def servers():
    """Three real HTTP servers on loopback, sharing one barrier of three."""
    barrier = threading.Barrier(3, timeout=5)
    started = []
    for _ in range(3):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.barrier, server.release, server.client_ports, server.delay = barrier, threading.Event(), set(), 0.0
        server.arrivals = []
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield started
    for server in started:
        server.release.set()
        server.shutdown()
        server.server_close()


def url(server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def post(target: str, body: bytes = b"x", timeout: float = 5.0, headers: dict | None = None) -> Outgoing:
    return Outgoing("POST", target, headers or {}, body, timeout, min(timeout, 2.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_all_requests_are_in_flight_at_once_and_each_gets_its_own_answer(servers):
    # Each server answers only when all three have their request: sent one after another, they would fail.
    results = send_all([post(url(s, "/together"), body=f"image {i}".encode(), headers={"X-Request-ID": f"r{i}"})
                        for i, s in enumerate(servers)])
    assert [type(r) for r in results] == [Answer] * 3
    assert [r.status for r in results] == [200, 200, 200]
    answers = [json.loads(r.data) for r in results]
    assert [a["body"] for a in answers] == ["image 0", "image 1", "image 2"]
    assert [a["id"] for a in answers] == ["r0", "r1", "r2"]
    assert all(a["expect"] is None for a in answers)  # the body goes at once, no "100 Continue" round trip


def test_failures_are_told_apart_per_request(servers):
    quiet, closing, fine = servers
    results = send_all([
        post(url(quiet, "/silent"), timeout=0.5),
        post(url(closing, "/hangup")),
        post(f"http://127.0.0.1:{free_port()}/anything"),
        post(url(fine, "/missing")),
    ])
    timed_out, hung_up, refused, missing = results
    assert isinstance(timed_out, TransportFailure) and timed_out.timed_out and not timed_out.unreachable
    assert isinstance(hung_up, TransportFailure) and hung_up.unreachable and hung_up.kind == "RemoteDisconnected"
    assert isinstance(refused, TransportFailure) and refused.unreachable and refused.kind == "NewConnectionError"
    assert isinstance(missing, Answer) and missing.status == 404
    assert json.loads(missing.data) == {"error": "no such thing"}


def test_connections_are_kept_alive_between_calls_and_proxies_are_ignored(servers, monkeypatch):
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    server = servers[0]
    for _ in range(5):
        (result,) = send_all([post(url(server, "/echo"))])
        assert isinstance(result, Answer) and result.status == 200
    assert len(server.client_ports) == 1  # one connection for the five calls


def test_post_to_each_tries_the_next_replica_when_the_first_is_unreachable(servers):
    down = f"http://127.0.0.1:{free_port()}"
    up = url(servers[0], "")
    directory = ServiceDirectory({"a": [down, up], "b": url(servers[1], "")}, token="secret")
    for _ in range(2):  # the first call meets the down replica first and goes on to the next; the second skips it
        answers = directory.post_to_each("/echo", b"pixels", {"X-Request-ID": "r1"}, 5.0)
        assert answers["a"].body["body"] == "pixels" and answers["a"].replica == up
        assert answers["a"].body["auth"] == "Bearer secret"
        assert answers["b"].body["id"] == "r1"
    states = {r.url: r.up for r in directory.clients["a"].replicas()}
    assert states == {down: False, up: True}


def test_post_to_each_reports_each_services_failure_in_its_own_entry(servers):
    directory = ServiceDirectory({"missing": url(servers[0], ""), "gone": f"http://127.0.0.1:{free_port()}",
                                  "fine": url(servers[1], "")})
    answers = directory.post_to_each("/missing", b"x", {}, 5.0, services=["missing", "fine"])
    assert isinstance(answers["missing"], ServiceError) and answers["missing"].status == 404
    assert "no such thing" in str(answers["missing"])
    answers = directory.post_to_each("/echo", b"x", {}, 5.0)
    assert isinstance(answers["gone"], ServiceError) and "unreachable" in str(answers["gone"])
    assert answers["fine"].body["body"] == "x" and answers["missing"].body["body"] == "x"


def test_https_services_are_verified_against_pythons_trust_store(tmp_path, monkeypatch):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads, server.client_ports, server.delay, server.arrivals = True, set(), 0.0, []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = f"https://localhost:{server.server_address[1]}/echo"
        (untrusted,) = send_all([post(target)])  # a self-signed certificate nobody said to trust
        assert isinstance(untrusted, TransportFailure) and not untrusted.unreachable
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # Python's own way to name the trusted CAs
        (trusted,) = send_all([post(target, body=b"over tls")])
        assert isinstance(trusted, Answer) and json.loads(trusted.data)["body"] == "over tls"
    finally:
        server.shutdown()
        server.server_close()


def test_a_timeout_on_a_kept_alive_connection_is_a_read_timeout_and_fires_on_time(servers):
    server = servers[0]
    (warm,) = send_all([post(url(server, "/echo"))])  # the connection this thread keeps for the next call
    assert isinstance(warm, Answer)
    started = time.perf_counter()
    (late,) = send_all([post(url(server, "/silent"), timeout=0.3)])
    waited = time.perf_counter() - started
    # The server has the request (it may be doing the work): never "unreachable", which would send it elsewhere.
    assert isinstance(late, TransportFailure) and late.timed_out and not late.unreachable, late
    assert len(server.client_ports) == 1  # it was the kept-alive connection
    assert waited < 0.9, f"a 0.3 s timeout fired after {waited:.2f} s"


def test_binary_bodies_and_latin_1_headers_arrive_whole(servers):
    body = bytes(range(256)) * 64  # NUL bytes included, as in raw float32 pixels
    (answer,) = send_all([post(url(servers[0], "/echo"), body=body, headers={"X-Request-ID": "café-1"})])
    echoed = json.loads(answer.data)
    assert echoed["body"].encode("latin-1") == body
    assert echoed["id"] == "café-1"  # as http.client sends it: Latin-1


def test_a_header_that_cannot_be_sent_is_refused_before_anything_goes_out(servers):
    with pytest.raises(ValueError, match="line break"):
        send_all([post(url(servers[0], "/echo"), headers={"X-Request-ID": "a\r\nX-Admin: yes"})])
    assert servers[0].client_ports == set()
    directory = ServiceDirectory({"a": url(servers[0], ""), "b": url(servers[1], "")})
    answers = directory.post_to_each("/echo", b"x", {"X-Request-ID": "snow \u2603"}, 5.0)
    assert all(isinstance(a, ServiceError) and "Latin-1" in str(a) for a in answers.values()), answers
    (later,) = send_all([post(url(servers[0], "/echo"))])  # nothing half-sent is left behind on the thread
    assert isinstance(later, Answer) and json.loads(later.data)["body"] == "x"


def test_each_service_s_call_is_timed_on_its_own(servers):
    servers[1].delay = 0.4
    seen = {}
    directory = ServiceDirectory({"fast": url(servers[0], ""), "slow": url(servers[1], "")},
                                 on_call=lambda service, path, seconds, ok: seen.setdefault(service, (seconds, ok)))
    answers = directory.post_to_each("/echo", b"x", {}, 5.0)
    assert answers["slow"].roundtrip_ms >= 400 and answers["fast"].roundtrip_ms < answers["slow"].roundtrip_ms / 2
    # The metrics get each service's own time, not the whole fan-out's (which is the slow one's).
    assert seen["slow"][0] >= 0.4 and seen["fast"][0] < seen["slow"][0] / 2
    assert seen["slow"][1] and seen["fast"][1]


def full_listener() -> tuple[socket.socket, list[socket.socket]]:
    """A port whose accept queue is full: the kernel drops new connections, so they time out connecting."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.2)
    return listener, fillers


def test_a_connect_timeout_means_unreachable():
    listener, fillers = full_listener()
    try:
        target = f"http://127.0.0.1:{listener.getsockname()[1]}/echo"
        (failure,) = send_all([Outgoing("POST", target, {}, b"x", 5.0, 0.3)])
        assert isinstance(failure, TransportFailure) and failure.unreachable and failure.kind == "ConnectTimeout"
    finally:
        for sock in [listener, *fillers]:
            sock.close()


def test_failover_goes_at_once_while_the_other_services_are_still_in_flight(servers):
    refused, also_refused, healthy = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}", url(
        servers[0], "")
    servers[1].delay = 1.0  # a slow service: the others must not wait for it to move on
    seen = {}
    directory = ServiceDirectory({"a": [refused, also_refused, healthy], "slow": url(servers[1], "")},
                                 on_call=lambda service, path, seconds, ok: seen.setdefault(service, seconds))
    started = time.perf_counter()
    answers = directory.post_to_each("/echo", b"x", {}, 3.0)
    assert not isinstance(answers["a"], Exception), answers["a"]
    assert servers[0].arrivals[0] - started < 0.5  # sent on to the healthy replica before the slow one answered
    assert answers["a"].replica == healthy and answers["slow"].body["body"] == "x"
    # "a" went through two dead replicas and had its answer long before the slow service answered.
    assert seen["slow"] >= 1.0 and seen["a"] < seen["slow"] / 2
    states = {r.url: (r.up, r.last_error) for r in directory.clients["a"].replicas()}
    assert states == {refused: (False, "NewConnectionError"), also_refused: (False, "NewConnectionError"),
                      healthy: (True, None)}


def test_failover_stops_when_the_time_is_up():
    listener, fillers = full_listener()
    try:
        stuck = f"http://127.0.0.1:{listener.getsockname()[1]}"  # the whole connect timeout (2 s) to find out
        directory = ServiceDirectory({"a": [stuck, f"http://127.0.0.1:{free_port()}"]})
        answers = directory.post_to_each("/echo", b"x", {}, 1.0)  # connect timeout: min(1.0, 2 s)
        assert isinstance(answers["a"], ServiceError)
        assert "(1 of 2 replicas tried): ConnectTimeout" in str(answers["a"])
    finally:
        for sock in [listener, *fillers]:
            sock.close()


def test_a_failing_transport_gives_each_request_an_error_and_the_next_call_starts_afresh(servers, monkeypatch):
    import gateway.concurrent_http as transport_module

    class FullSelector(selectors.DefaultSelector):
        def register(self, fileobj, events, data=None):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(transport_module._local, "transport", None)  # this thread's next call builds one
    monkeypatch.setattr(transport_module.selectors, "DefaultSelector", FullSelector)
    started = time.perf_counter()
    results = send_all([post(url(s, "/echo"), timeout=2.0) for s in servers[:2]])
    assert all(isinstance(r, TransportFailure) and r.kind == "TransportError" and "No space" in str(r)
               for r in results), results
    assert time.perf_counter() - started < 2.0  # told at once, not after spinning until the timeouts
    monkeypatch.undo()
    (answer,) = send_all([post(url(servers[0], "/echo"))])
    assert isinstance(answer, Answer) and answer.status == 200
