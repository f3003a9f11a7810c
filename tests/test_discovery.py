"""Service replicas: DNS discovery, round-robin per request, failover to the next replica, half-open rejoin.

The HTTP tests run real keep-alive servers on loopback; stopping one also closes the connections it has open,
as a container that goes away does.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.clients import ServiceClient, ServiceDirectory, ServiceError
from gateway.discovery import ReplicaSet, parse_service_map


class Backend:
    """A loopback HTTP/1.1 server answering {"served_by": <port>} to any GET or POST.

    mode "ok" answers; "drop" closes the connection without an answer; "slow" answers after `delay_s`.
    The path /conflict answers 409.
    """

    def __init__(self, port: int = 0, mode: str = "ok", delay_s: float = 0.0, host: str = "127.0.0.1"):
        self.mode, self.delay_s = mode, delay_s
        self.hits = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.server = self._server(host, port)
        self.port = self.server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()

    def _server(self, host: str, port: int) -> http.server.ThreadingHTTPServer:
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the services' gunicorn
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait

            def _answer(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with backend._lock:
                    backend.hits += 1
                if backend.mode == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if backend.mode == "slow":
                    time.sleep(backend.delay_s)
                status, body = (409, {"error": "busy"}) if self.path == "/conflict" else (200, {})
                data = json.dumps({**body, "served_by": backend.port}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            def process_request(self, request, client_address):
                with backend._lock:
                    backend._connections.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request):
                with backend._lock:
                    backend._connections.discard(request)
                super().shutdown_request(request)

            def handle_error(self, request, client_address):
                pass  # a connection cut by stop() mid-answer is expected here

        return Server((host, port), Handler)

    def stop(self) -> None:
        """Stop accepting and cut every open keep-alive connection."""
        self.server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server.server_close()


@pytest.fixture
def backends():
    """A factory of Backends, every one stopped at the end."""
    started: list[Backend] = []

    def start(port: int = 0, mode: str = "ok", delay_s: float = 0.0, host: str = "127.0.0.1") -> Backend:
        backend = Backend(port, mode, delay_s, host)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        try:
            backend.stop()
        except OSError:
            pass


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDns:
    """A resolver answering from a dict; a name mapped to None fails as a real lookup would."""

    def __init__(self, records: dict[str, list[str] | None]):
        self.records = records
        self.lookups = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups += 1
        addresses = self.records.get(host)
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return addresses


def served_by(client: ServiceClient, calls: int, path: str = "/predict") -> list[int]:
    return [client.call("POST", path, 2.0, json={"pixels": []}).body["served_by"] for _ in range(calls)]


# --- parse_service_map -------------------------------------------------------------------------------------------


def test_parse_service_map_unions_repeated_names():
    text = " keras=http://keras:8001 , torch=http://127.0.0.1:8002/,torch=http://127.0.0.1:8012,tf=http://tf:8003,"
    assert parse_service_map(text) == {
        "keras": ["http://keras:8001"],
        "torch": ["http://127.0.0.1:8002", "http://127.0.0.1:8012"],
        "tf": ["http://tf:8003"],
    }
    assert parse_service_map("torch=http://a:1,torch=http://a:1/") == {"torch": ["http://a:1"]}
    assert parse_service_map("") == {}


@pytest.mark.parametrize(
    "text", ["torch", "torch=", "=http://torch:8002", "torch=torch:8002", "torch=ftp://torch", "torch=http://t:port"]
)
def test_parse_service_map_rejects_a_malformed_item(text):
    with pytest.raises(ValueError):
        parse_service_map(f"keras=http://keras:8001,{text}")


def test_a_replica_set_rejects_a_url_it_could_not_call():
    for url in ("torch:8002", "http://torch:port", "ftp://torch"):
        with pytest.raises(ValueError):
            ReplicaSet("torch", ["http://127.0.0.1:8002", url])
    with pytest.raises(ValueError):
        ReplicaSet("torch", [])


# --- resolution --------------------------------------------------------------------------------------------------


def test_a_name_with_three_addresses_gives_three_replicas_sorted_and_deduplicated():
    dns = FakeDns({"torch": ["10.0.0.10", "10.0.0.2", "fd00::5", "10.0.0.2", "10.0.0.3"]})
    replicas = ReplicaSet("torch", ["http://torch:8002"], resolver=dns).replicas()
    assert [r.url for r in replicas] == [
        "http://10.0.0.2:8002",
        "http://10.0.0.3:8002",
        "http://10.0.0.10:8002",
        "http://[fd00::5]:8002",
    ]
    assert all(r.up and r.failures == 0 for r in replicas)


def test_ip_literals_are_not_resolved_and_repeated_urls_are_unioned():
    dns = FakeDns({"torch": ["10.0.0.1", "10.0.0.2"]})
    urls = ["http://127.0.0.1:8002", "http://[::1]:8012", "http://torch:8002/v1", "http://127.0.0.1:8002"]
    replicas = ReplicaSet("torch", urls, resolver=dns).replicas()
    assert [r.url for r in replicas] == [
        "http://127.0.0.1:8002",
        "http://[::1]:8012",
        "http://10.0.0.1:8002/v1",
        "http://10.0.0.2:8002/v1",
    ]
    assert dns.lookups == 1


def test_re_resolution_adds_and_drops_replicas_and_keeps_the_state_of_the_others():
    clock, dns = FakeClock(), FakeDns({"torch": ["10.0.0.1", "10.0.0.2", "10.0.0.3"]})
    replica_set = ReplicaSet("torch", ["http://torch:8002"], refresh_s=5.0, resolver=dns, clock=clock)
    first = {r.url: r for r in replica_set.replicas()}
    replica_set.mark_failed(first["http://10.0.0.2:8002"], "ConnectionError")

    dns.records["torch"] = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    clock.now += 4.9
    assert [r.url for r in replica_set.replicas()] == list(first)  # not due yet: no lookup
    assert dns.lookups == 1

    clock.now += 0.2
    now = {r.url: r for r in replica_set.replicas()}
    assert list(now) == ["http://10.0.0.2:8002", "http://10.0.0.3:8002", "http://10.0.0.4:8002"]
    assert now["http://10.0.0.2:8002"] is first["http://10.0.0.2:8002"]
    assert now["http://10.0.0.2:8002"].up is False and now["http://10.0.0.2:8002"].failures == 1
    assert now["http://10.0.0.3:8002"] is first["http://10.0.0.3:8002"]
    assert now["http://10.0.0.4:8002"].up is True


def test_a_resolution_error_keeps_the_previous_replicas():
    clock, dns = FakeClock(), FakeDns({"torch": ["10.0.0.1", "10.0.0.2"]})
    replica_set = ReplicaSet("torch", ["http://torch:8002"], refresh_s=1.0, resolver=dns, clock=clock)
    before = replica_set.replicas()
    dns.records["torch"] = None
    clock.now += 2
    assert replica_set.replicas() == before
    assert dns.lookups == 2
    dns.records["torch"] = []  # an empty answer is no better
    clock.now += 2
    assert replica_set.replicas() == before


def test_a_name_that_never_resolved_is_kept_as_written_until_it_does():
    clock, dns = FakeClock(), FakeDns({})
    replica_set = ReplicaSet("torch", ["http://torch:8002"], refresh_s=1.0, resolver=dns, clock=clock)
    assert [r.url for r in replica_set.replicas()] == ["http://torch:8002"]
    dns.records["torch"] = ["10.0.0.7"]
    clock.now += 2
    assert [r.url for r in replica_set.replicas()] == ["http://10.0.0.7:8002"]


def test_localhost_resolves_for_real_to_addresses():
    replicas = ReplicaSet("local", ["http://localhost:8002"]).replicas()
    assert replicas
    assert {r.url for r in replicas} <= {"http://127.0.0.1:8002", "http://[::1]:8002"}


# --- choosing a replica ------------------------------------------------------------------------------------------


def test_pick_round_robins_over_up_replicas_and_offers_a_down_one_again_after_retry_down_s():
    clock = FakeClock()
    urls = ["http://10.0.0.1:1", "http://10.0.0.2:1", "http://10.0.0.3:1"]
    replica_set = ReplicaSet("torch", urls, retry_down_s=2.0, clock=clock)
    assert [replica_set.pick().url for _ in range(6)] == urls + urls
    a, b, c = replica_set.replicas()
    replica_set.mark_failed(b, "ConnectionError")
    assert {replica_set.pick().url for _ in range(10)} == {a.url, c.url}
    assert [r.url for r in replica_set.order()][-1] == b.url  # down replicas are tried last

    clock.now += 2.0
    picks = [replica_set.pick() for _ in range(10)]
    assert picks.count(b) == 1  # half-open: one request per retry_down_s, until it answers
    replica_set.mark_ok(b)
    assert b.up and b.failures == 0 and b.down_since is None
    assert Counter(replica_set.pick().url for _ in range(9)) == Counter(urls * 3)


def test_when_every_replica_is_down_pick_still_round_robins_over_all():
    replica_set = ReplicaSet("torch", ["http://10.0.0.1:1", "http://10.0.0.2:1"], retry_down_s=60)
    for replica in replica_set.replicas():
        replica_set.mark_failed(replica, "ConnectionError")
    assert {replica_set.pick().url for _ in range(4)} == {"http://10.0.0.1:1", "http://10.0.0.2:1"}
    assert len(replica_set.order()) == 2


# --- over real HTTP ----------------------------------------------------------------------------------------------


def test_requests_alternate_between_two_replicas(backends):
    one, two = backends(), backends()
    client = ServiceClient("torch", [one.url, two.url])
    assert client.url == one.url
    ports = served_by(client, 20)
    assert Counter(ports) == {one.port: 10, two.port: 10}
    assert all(a != b for a, b in zip(ports, ports[1:], strict=False))
    reply = client.call("GET", "/health", 2.0)
    assert reply.replica in (one.url, two.url) and reply.roundtrip_ms > 0


def test_a_name_resolving_to_two_addresses_spreads_over_both(backends):
    one = backends()
    try:
        two = backends(port=one.port, host="127.0.0.2")  # the same port on another address, as two containers
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    dns = FakeDns({"torch": ["127.0.0.2", "127.0.0.1"]})
    client = ServiceClient("torch", f"http://torch:{one.port}", resolver=dns)
    assert client.url == f"http://torch:{one.port}"
    replies = [client.call("POST", "/predict", 2.0, json={}) for _ in range(10)]
    assert Counter(reply.replica for reply in replies) == {one.url: 5, two.url: 5}
    two.stop()
    assert Counter(client.call("GET", "/health", 2.0).replica for _ in range(10)) == {one.url: 10}
    one.stop()
    with pytest.raises(ServiceError, match=f"torch is unreachable at .*resolved from http://torch:{one.port}"):
        client.call("GET", "/health", 2.0)


def test_call_replica_asks_the_given_replica(backends):
    one, two = backends(), backends()
    client = ServiceClient("torch", [one.url, two.url])
    for replica in client.replicas():
        reply = client.call_replica(replica.url, "GET", "/health", 2.0)
        assert reply.replica == replica.url and replica.url.endswith(f":{reply.body['served_by']}")


def test_a_stopped_replica_is_failed_over_taken_out_and_rejoins_when_back(backends):
    one, two = backends(), backends()
    client = ServiceClient("torch", [one.url, two.url], retry_down_s=0.2)
    served_by(client, 4)  # keep-alive connections open to both
    two.stop()
    assert Counter(served_by(client, 50)) == {one.port: 50}  # 0 errors
    down = {r.url: r for r in client.replicas()}[two.url]
    assert down.up is False and down.failures >= 1 and down.last_error

    back = backends(port=two.port)
    time.sleep(0.25)
    deadline = time.monotonic() + 5
    while back.hits == 0 and time.monotonic() < deadline:
        served_by(client, 1)
    assert back.hits > 0
    assert all(r.up for r in client.replicas())
    assert Counter(served_by(client, 10)) == {one.port: 5, two.port: 5}


def test_a_replica_that_drops_connections_is_failed_over(backends):
    good, dropping = backends(), backends(mode="drop")
    client = ServiceClient("torch", [dropping.url, good.url], retry_down_s=60)
    assert Counter(served_by(client, 10)) == {good.port: 10}
    assert dropping.hits == 1  # taken out at its first failure
    assert {r.url: r.up for r in client.replicas()} == {dropping.url: False, good.url: True}


def test_concurrent_calls_lose_nothing_when_a_replica_stops_midway(backends):
    one, two = backends(), backends()
    client = ServiceClient("torch", [one.url, two.url], retry_down_s=0.1)
    done, lock, halfway = [0], threading.Lock(), threading.Event()

    def worker(_: int) -> tuple[int, list[str]]:
        ok, errors = 0, []
        for _ in range(50):
            try:
                client.call("POST", "/predict", 5.0, json={"pixels": []})
                ok += 1
            except ServiceError as exc:
                errors.append(str(exc))
            with lock:
                done[0] += 1
                if done[0] == 200:
                    halfway.set()
        return ok, errors

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker, i) for i in range(8)]
        assert halfway.wait(20)
        two.stop()
        results = [f.result() for f in futures]
    assert [error for _, errors in results for error in errors] == []
    assert sum(ok for ok, _ in results) == 400
    assert one.hits > 0 and two.hits > 0
    assert {r.url: r.up for r in client.replicas()} == {one.url: True, two.url: False}


def test_every_replica_down_is_a_service_error_naming_the_service(backends):
    urls = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    client = ServiceClient("torch", urls)
    with pytest.raises(ServiceError) as raised:
        client.call("GET", "/health", 2.0)
    message = str(raised.value)
    assert "torch" in message and "unreachable" in message
    assert all(url in message for url in urls)
    assert raised.value.status is None
    assert not any(r.up for r in client.replicas())


def test_an_error_status_is_an_answer_and_is_not_retried(backends):
    one, two = backends(), backends()
    client = ServiceClient("torch", [one.url, two.url])
    with pytest.raises(ServiceError) as raised:
        client.call("POST", "/conflict", 2.0, json={})
    assert raised.value.status == 409 and "busy" in str(raised.value)
    assert one.hits + two.hits == 1
    assert all(r.up for r in client.replicas())


def test_a_timeout_takes_the_replica_out_but_is_not_retried(backends):
    slow, fast = backends(mode="slow", delay_s=1.0), backends()
    client = ServiceClient("torch", [slow.url, fast.url], retry_down_s=60)
    with pytest.raises(ServiceError, match="did not answer within 0.3 s"):
        client.call("POST", "/predict", 0.3, json={})
    assert fast.hits == 0
    assert {r.url: r.up for r in client.replicas()} == {slow.url: False, fast.url: True}
    assert Counter(served_by(client, 4)) == {fast.port: 4}


def test_the_directory_takes_one_url_or_several_per_service(backends):
    one, two = backends(), backends()
    directory = ServiceDirectory({"keras": one.url, "torch": [one.url, two.url]})
    assert directory.clients["keras"].url == one.url
    assert [r.url for r in directory.clients["torch"].replicas()] == [one.url, two.url]
    answers = directory.fan_out(lambda client: client.call("GET", "/health", 2.0).body["served_by"])
    assert answers["keras"] == one.port and answers["torch"] in (one.port, two.port)
