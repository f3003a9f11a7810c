"""The gateway's concurrent HTTP sender (libcurl multi) against real HTTP servers on loopback."""

from __future__ import annotations

import http.server
import json
import socket
import ssl
import subprocess
import threading

import pytest

from gateway.clients import ServiceDirectory, ServiceError
from gateway.concurrent_http import Answer, Outgoing, TransportFailure, send_all


class Handler(http.server.BaseHTTPRequestHandler):
    """POST echoes what it got as JSON; /together answers only once every server of the test has its request;
    /missing is a JSON 404; /silent never answers; /hangup closes the connection without a word."""

    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn and waitress

    def do_POST(self):
        self.server.client_ports.add(self.client_address[1])
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/silent":
            self.server.release.wait(10)
            return
        if self.path == "/hangup":
            self.close_connection = True
            return
        status, answer = 200, {"body": body.decode(), "auth": self.headers.get("Authorization"),
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
        server.barrier, server.release, server.client_ports = barrier, threading.Event(), set()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
    yield started
    for server in started:
        server.release.set()
        server.shutdown()


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
    assert isinstance(hung_up, TransportFailure) and hung_up.unreachable
    assert isinstance(refused, TransportFailure) and refused.unreachable and refused.kind == "ConnectionRefusedError"
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
    for _ in range(2):  # round-robin starts at each replica once
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
    server.daemon_threads, server.client_ports = True, set()
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
